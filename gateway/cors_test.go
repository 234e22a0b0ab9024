package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/gateway"
)

// corsHeaders are the headers every CORS case states exactly: a header a
// case does not name must be absent.
var corsHeaders = []string{
	"Access-Control-Allow-Origin",
	"Access-Control-Allow-Credentials",
	"Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers",
	"Access-Control-Expose-Headers",
	"Access-Control-Max-Age",
	"Vary",
}

const (
	appOrigin   = "https://app.example"
	otherOrigin = "https://other.example"
	evilOrigin  = "https://evil.example"
	exposed     = "Retry-After, Www-Authenticate" // rs/cors writes names canonical
	varyPre     = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
)

// TestCORS: Config.CORSOrigins decides who may read the API from a
// browser: "*" is any origin without credentials; explicit origins are
// exactly those, with credentials (an EventSource withCredentials sends
// cookies). Every answer that depends on the origin says Vary: Origin, the
// stream route (outside Echo) as much as Echo's routes, and preflights
// answer what the publish endpoint needs (POST, Authorization,
// Content-Type, Idempotency-Key).
func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ok := must(t)
	ok(e.pub.Job("cors").Register(ctx))
	ok(e.pub.Job("cors-done").Register(ctx))
	ok(e.pub.Job("cors-done").Complete(ctx, "r-1", []byte(`{"total":1}`)))

	handler := func(origins ...string) http.Handler {
		cfg := testConfig()
		cfg.CORSOrigins = origins
		cfg.JoinTimeout = time.Millisecond // no hub runs: streams are refused
		s, err := gateway.New(cfg, e.rdb)
		if err != nil {
			t.Fatal(err)
		}
		return s.Handler()
	}
	explicit := handler(appOrigin, otherOrigin, "https://*.tenant.example")
	anyOrigin := handler("*")
	mixed := handler(appOrigin, "*") // "*" wins: never credentials

	allowed := map[string]string{
		"Access-Control-Allow-Origin":      appOrigin,
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Expose-Headers":    exposed,
		"Vary":                             "Origin",
	}
	anyAllowed := map[string]string{
		"Access-Control-Allow-Origin":   "*",
		"Access-Control-Expose-Headers": exposed,
		"Vary":                          "Origin",
	}
	refused := map[string]string{"Vary": "Origin"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	preflight := func(origin, method, headers string) []string {
		h := []string{"Origin", origin, "Access-Control-Request-Method", method}
		if headers != "" {
			h = append(h, "Access-Control-Request-Headers", headers)
		}
		return h
	}
	preflightOK := func(origin, method, headers string) map[string]string {
		m := map[string]string{
			"Access-Control-Allow-Origin":      origin,
			"Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods":     method,
			"Access-Control-Max-Age":           "600",
			"Vary":                             varyPre,
		}
		if headers != "" {
			m["Access-Control-Allow-Headers"] = headers
		}
		return m
	}
	preflightRefused := map[string]string{"Vary": varyPre}

	const (
		snapshot = "/api/reports/cors"
		stream   = "/api/reports/cors/stream"
		report   = "/api/reports/cors-done/report"
		publish  = "/api/reports/cors/events"
	)
	for _, c := range []struct {
		name    string
		h       http.Handler
		method  string
		path    string
		header  []string
		status  int
		want    map[string]string
		comment string
	}{
		{name: "allowed origin, snapshot", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", appOrigin}, status: 200, want: allowed},
		{name: "second allowed origin", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", otherOrigin}, status: 200,
			want: with(allowed, "Access-Control-Allow-Origin", otherOrigin)},
		{name: "wildcard origin of rs/cors", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", "https://a.tenant.example"}, status: 200,
			want: with(allowed, "Access-Control-Allow-Origin", "https://a.tenant.example")},
		// Without Serve the hub is not running: the stream is refused as
		// transient (503 JSON with Retry-After), outside Echo.
		{name: "allowed origin, stream refusal", h: explicit, method: "GET", path: stream,
			header: []string{"Origin", appOrigin}, status: 503, want: allowed},
		{name: "allowed origin, retry-only stream", h: explicit, method: "GET", path: stream,
			header: []string{"Origin", appOrigin, "Accept", "text/event-stream"}, status: 200, want: allowed},
		{name: "allowed origin, report sets its own Vary", h: explicit, method: "GET", path: report,
			header: []string{"Origin", appOrigin}, status: 200,
			want: with(allowed, "Vary", "Accept-Encoding, Origin")},
		{name: "allowed origin, unknown route", h: explicit, method: "GET", path: "/nope",
			header: []string{"Origin", appOrigin}, status: 404, want: allowed},
		{name: "allowed origin, POST (publish off: 404)", h: explicit, method: "POST", path: publish,
			header: []string{"Origin", appOrigin, "Content-Type", "application/json"}, status: 404, want: allowed},
		{name: "disallowed origin, POST (publish off: 404)", h: explicit, method: "POST", path: publish,
			header: []string{"Origin", evilOrigin, "Content-Type", "application/json"}, status: 404, want: refused},
		{name: "disallowed origin, snapshot", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", evilOrigin}, status: 200, want: refused},
		{name: "disallowed origin, stream refusal", h: explicit, method: "GET", path: stream,
			header: []string{"Origin", evilOrigin}, status: 503, want: refused},
		{name: "disallowed origin, report", h: explicit, method: "GET", path: report,
			header: []string{"Origin", evilOrigin}, status: 200, want: with(refused, "Vary", "Accept-Encoding, Origin")},
		{name: "an allowed origin's suffix", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", appOrigin + ".evil.example"}, status: 200, want: refused},
		{name: "an allowed origin on another port", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", appOrigin + ":8443"}, status: 200, want: refused},
		{name: "an allowed origin over http", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", "http://app.example"}, status: 200, want: refused},
		{name: "the wildcard's bare domain", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", "https://tenant.example"}, status: 200, want: refused},
		{name: "null origin", h: explicit, method: "GET", path: snapshot,
			header: []string{"Origin", "null"}, status: 200, want: refused},
		{name: "no origin", h: explicit, method: "GET", path: snapshot, status: 200, want: refused},

		{name: "any origin, snapshot", h: anyOrigin, method: "GET", path: snapshot,
			header: []string{"Origin", evilOrigin}, status: 200, want: anyAllowed},
		{name: "any origin, stream refusal", h: anyOrigin, method: "GET", path: stream,
			header: []string{"Origin", evilOrigin}, status: 503, want: anyAllowed},
		{name: "any origin, with credentials asked", h: anyOrigin, method: "GET", path: snapshot,
			header: []string{"Origin", appOrigin, "Cookie", "session=1"}, status: 200, want: anyAllowed},
		{name: "* among explicit origins", h: mixed, method: "GET", path: snapshot,
			header: []string{"Origin", appOrigin}, status: 200, want: anyAllowed},
		{name: "any origin, no origin", h: anyOrigin, method: "GET", path: snapshot, status: 200, want: refused},

		{name: "preflight, stream with Last-Event-ID", h: explicit, method: "OPTIONS", path: stream,
			header: preflight(appOrigin, "GET", "cache-control,last-event-id"), status: 204,
			want: preflightOK(appOrigin, "GET", "cache-control,last-event-id")},
		{name: "preflight, publish", h: explicit, method: "OPTIONS", path: publish,
			header: preflight(appOrigin, "POST", "authorization,content-type,idempotency-key"), status: 204,
			want: preflightOK(appOrigin, "POST", "authorization,content-type,idempotency-key")},
		{name: "preflight, HEAD without headers", h: explicit, method: "OPTIONS", path: snapshot,
			header: preflight(appOrigin, "HEAD", ""), status: 204, want: preflightOK(appOrigin, "HEAD", "")},
		{name: "preflight, accept", h: explicit, method: "OPTIONS", path: snapshot,
			header: preflight(appOrigin, "GET", "accept"), status: 204, want: preflightOK(appOrigin, "GET", "accept")},
		{name: "preflight, any origin", h: anyOrigin, method: "OPTIONS", path: publish,
			header: preflight(evilOrigin, "POST", "authorization,content-type"), status: 204,
			want: with(preflightOK("*", "POST", "authorization,content-type"), "Access-Control-Allow-Credentials", "")},
		{name: "preflight, disallowed origin", h: explicit, method: "OPTIONS", path: publish,
			header: preflight(evilOrigin, "POST", "content-type"), status: 204, want: preflightRefused},
		{name: "preflight, disallowed request header", h: explicit, method: "OPTIONS", path: publish,
			header: preflight(appOrigin, "POST", "content-type,x-custom"), status: 204, want: preflightRefused},
		{name: "preflight, disallowed method", h: explicit, method: "OPTIONS", path: publish,
			header: preflight(appOrigin, "DELETE", ""), status: 204, want: preflightRefused},
		{name: "preflight, any origin, disallowed header", h: anyOrigin, method: "OPTIONS", path: stream,
			header: preflight(evilOrigin, "GET", "x-custom"), status: 204, want: preflightRefused},
		// Not a preflight (no Access-Control-Request-Method): the route
		// answers (Echo's OPTIONS, 204 with Allow), as an actual request.
		{name: "plain OPTIONS", h: explicit, method: "OPTIONS", path: snapshot,
			header: []string{"Origin", appOrigin}, status: 204, want: allowed},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, nil)
			for i := 0; i+1 < len(c.header); i += 2 {
				req.Header.Set(c.header[i], c.header[i+1])
			}
			rec := httptest.NewRecorder()
			c.h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Errorf("status %d, want %d (%s)", rec.Code, c.status, rec.Body)
			}
			for _, k := range corsHeaders {
				if got, want := strings.Join(rec.Result().Header.Values(k), ", "), c.want[k]; got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestCORSOverTheWire: a stream taken over from net/http writes its own
// response head; it carries the CORS headers too.
func TestCORSOverTheWire(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.CORSOrigins = []string{appOrigin}
	g := e.gateway(cfg)
	ok := must(t)
	ok(e.pub.Job("cors-wire").Register(context.Background()))
	for _, c := range []struct {
		origin string
		want   map[string]string
	}{
		{appOrigin, map[string]string{
			"Access-Control-Allow-Origin":      appOrigin,
			"Access-Control-Allow-Credentials": "true",
			"Access-Control-Expose-Headers":    exposed,
			"Vary":                             "Origin",
		}},
		{evilOrigin, map[string]string{"Vary": "Origin"}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.streamURL("cors-wire"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK || !resp.Close {
			t.Errorf("%s: %s, close=%v; want 200 taken over (close)", c.origin, resp.Status, resp.Close)
		}
		for _, k := range corsHeaders {
			if got, want := strings.Join(resp.Header.Values(k), ", "), c.want[k]; got != want {
				t.Errorf("%s: %s: %q, want %q", c.origin, k, got, want)
			}
		}
	}
}
