package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/sseclient"
	"github.com/ssegate/ssegate/pkg/token"
	"github.com/ssegate/ssegate/test/streamtest"
)

// publishHTTP posts one event body and returns the status and the decoded
// answer.
func publishHTTP(t *testing.T, g *gw, job, tok, body string, header ...string) (int, map[string]string) {
	t.Helper()
	status, _, m := do(t, g, req{method: "POST", path: "/api/reports/" + job + "/events", header: append(bearer(tok), header...), body: body})
	return status, m
}

// TestAuthHappyPath runs a whole job with auth on: the worker publishes
// over HTTP with a publisher token (a retried step with its
// Idempotency-Key stored once), one browser-like client streams with the
// token in the query, another resumes with Last-Event-ID and the token in
// the header, a poller reads the snapshot; each gets every event exactly
// once.
func TestAuthHappyPath(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	g := f.rsa
	pubTok := mint(t, secretKey(t, pubSecret), func() token.Claims { c := claimsFor(); c.Publish = token.Grant{"job-*"}; return c }())
	subTok := mint(t, f.newKey.priv, claimsFor("job-7"))

	okPublish := func(body string, header ...string) string {
		t.Helper()
		status, m := publishHTTP(t, g, "job-7", pubTok, body, header...)
		if status != http.StatusCreated || m["id"] == "" {
			t.Fatalf("publish %s: %d %v", body, status, m)
		}
		return m["id"]
	}
	okPublish(`{"type":"register"}`)
	live := streamtest.Open(t, []string{g.streamURL("job-7", "includeReport=true", "access_token="+subTok)}, "")
	live.WaitEvents(t, 1)
	okPublish(`{"type":"status","status":"processing","jobId":"job-7"}`)
	first := okPublish(`{"type":"progress","step":1,"totalSteps":3,"currentStep":"Loading"}`, "Idempotency-Key", "step-1")
	if again := okPublish(`{"type":"progress","step":1,"totalSteps":3,"currentStep":"Loading"}`, "Idempotency-Key", "step-1"); again != first {
		t.Errorf("retried step = %s, want the first ID %s", again, first)
	}
	if status, m := publishHTTP(t, g, "job-7", pubTok, `{"type":"progress","step":2,"totalSteps":3}`, "Idempotency-Key", "step-1"); status != http.StatusUnprocessableEntity || m["code"] != gateway.CodeIdempotencyKeyReused {
		t.Errorf("the key on another step: %d %v", status, m)
	}
	okPublish(`{"type":"progress","step":2,"totalSteps":3,"currentStep":"line one\r\nevent: injected\r\ndata: x"}`)

	// A second client joins mid-job from the first one's position.
	pos := live.WaitEvents(t, 4)[3].ID
	resumed := streamtest.Open(t, []string{g.streamURL("job-7")}, pos, func(c *sseclient.Client) {
		c.Header = http.Header{"Authorization": {"Bearer " + subTok}}
	})
	okPublish(`{"type":"progress","step":3,"totalSteps":3,"currentStep":"Writing"}`)
	okPublish(`{"type":"complete","reportId":"r-7","report":{"rows":[1,2]}}`)

	for _, s := range []*streamtest.Stream{live, resumed} {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
	}
	want := f.e.history("job-7")
	if len(want) != 6 {
		t.Fatalf("history holds %d events, want 6 (register, processing, 3 steps, complete)", len(want))
	}
	streamtest.AssertExactlyOnce(t, live.Events(), want)
	streamtest.AssertExactlyOnce(t, resumed.Events(), want[4:])
	for _, m := range live.Events() {
		if m.Event == "injected" {
			t.Errorf("a CR/LF in a step name made an event of its own: %+v", m)
		}
	}
	var p event.ProgressEvent
	if err := json.Unmarshal(live.Events()[3].Data, &p); err != nil || p.CurrentStep != "line one\r\nevent: injected\r\ndata: x" || p.Percentage != 66 {
		t.Errorf("step 2 = %+v, %v", p, err)
	}
	var c event.CompleteEvent
	if err := json.Unmarshal(live.Events()[5].Data, &c); err != nil || string(c.Report) != `{"rows":[1,2]}` {
		t.Errorf("complete = %+v, %v", c, err)
	}

	status, _, snap := rawGet(t, g.URL+"/api/reports/job-7", "Authorization", "Bearer "+subTok)
	if status != http.StatusOK || !strings.Contains(snap, `"status":"completed"`) || !strings.Contains(snap, `"reportId":"r-7"`) {
		t.Errorf("snapshot: %d %s", status, snap)
	}
	status, _, report := rawGet(t, g.URL+"/api/reports/job-7/report?access_token="+subTok)
	if status != http.StatusOK || report != `{"rows":[1,2]}` {
		t.Errorf("report: %d %s", status, report)
	}
}

// TestStreamEndsAtTokenExpiry: a stream whose token expires while it is
// open is closed at exp with a retry hint, and counted as token_expired;
// the client's reconnect with the same token is refused as expired.
func TestStreamEndsAtTokenExpiry(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	c := claimsFor("report-2")
	// exp has whole seconds: at least one second from now.
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	c.ExpiresAt = jwt.NewNumericDate(exp)
	tok := mint(t, f.newKey.priv, c)

	status, _, body := rawGet(t, f.rsa.streamURL("report-2", "access_token="+tok), "Accept", "text/event-stream")
	ended := time.Now()
	if status != http.StatusOK {
		t.Fatalf("stream: %d %s", status, body)
	}
	if ended.Before(exp) || ended.After(exp.Add(5*time.Second)) {
		t.Errorf("stream ended at %v, token expires at %v", ended.Format(time.StampMilli), exp.Format(time.StampMilli))
	}
	tail := body[strings.LastIndex(body, "\n\n")+2:]
	if !strings.Contains(tail, ": token expired") || !strings.Contains(tail, "retry: ") {
		t.Errorf("the stream's last lines %q carry no token-expired retry hint", tail)
	}
	// The close is counted just after the connection is closed.
	streamtest.Eventually(t, "closed{token_expired} = 1", func() bool {
		return f.rsa.metric(t, "ssegate_connections_closed_total", "reason", "token_expired") == 1
	})
	status, _, body = rawGet(t, f.rsa.streamURL("report-2", "access_token="+tok))
	if status != http.StatusUnauthorized || !strings.Contains(body, gateway.CodeTokenExpired) {
		t.Errorf("reconnect with the expired token: %d %s", status, body)
	}
}

// TestTokensNeverLogged: with the access log on and debug logs, no token
// and no access_token parameter appears in any log line, for accepted,
// refused and malformed tokens alike.
func TestTokensNeverLogged(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	good := mint(t, f.newKey.priv, claimsFor("report-1"))
	other := mint(t, f.newKey.priv, claimsFor("report-2"))
	expired := func() string {
		c := claimsFor("report-1")
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
		return mint(t, f.newKey.priv, c)
	}()
	for _, tok := range []string{good, other, expired, "garbage-token-value"} {
		for _, path := range []string{"/api/reports/report-1/stream", "/api/reports/report-1", "/api/reports/report-1/report", "/api/reports/report-2/stream?timeout=1ms"} {
			sep := "?"
			if strings.Contains(path, "?") {
				sep = "&"
			}
			rawGet(t, f.rsa.URL+path+sep+"access_token="+tok)
			rawGet(t, f.rsa.URL+path, "Authorization", "Bearer "+tok)
		}
	}
	logs := f.rsa.logs.String()
	if !strings.Contains(logs, `msg=request`) || !strings.Contains(logs, "path=/api/reports/report-1/stream") {
		t.Fatalf("the access log is missing:\n%s", logs)
	}
	for _, secret := range []string{good, other, expired, "garbage-token-value", "access_token", strings.Split(good, ".")[2]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold %q:\n%s", secret[:min(len(secret), 20)], logs)
		}
	}
}

// TestConnectionsPerIP: the third stream from one address is refused with
// 429 and Retry-After (a retry-only stream for an EventSource); behind a
// trusted proxy, the X-Forwarded-For address counts, not the proxy's.
func TestConnectionsPerIP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxConnectionsPerIP = 2
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	g := e.gateway(cfg)
	ok := must(t)
	ok(e.pub.Job("ip-1").Register(context.Background()))

	from := func(ip string) func(*sseclient.Client) {
		return func(c *sseclient.Client) { c.Header = http.Header{"X-Forwarded-For": {ip}} }
	}
	a := streamtest.Open(t, []string{g.streamURL("ip-1")}, "", from("203.0.113.7"))
	b := streamtest.Open(t, []string{g.streamURL("ip-1")}, "", from("203.0.113.7"))
	a.WaitEvents(t, 1)
	b.WaitEvents(t, 1)

	status, h, body := rawGet(t, g.streamURL("ip-1"), "X-Forwarded-For", "203.0.113.7")
	if status != http.StatusTooManyRequests || !strings.Contains(body, gateway.CodeTooManyIPConnections) || h.Get("Retry-After") == "" {
		t.Errorf("third stream: %d %s (Retry-After %q)", status, body, h.Get("Retry-After"))
	}
	status, _, body = rawGet(t, g.streamURL("ip-1"), "X-Forwarded-For", "203.0.113.7", "Accept", "text/event-stream")
	if status != http.StatusOK || !strings.Contains(body, "ip_connection_limit") || !strings.Contains(body, "retry: ") {
		t.Errorf("third stream, as an EventSource: %d %q", status, body)
	}
	// A spoofed hop left of the client's own address changes nothing: the
	// proxy appended the address it saw.
	status, _, _ = rawGet(t, g.streamURL("ip-1", "timeout=1ms"), "X-Forwarded-For", "198.51.100.1, 203.0.113.7")
	if status != http.StatusTooManyRequests {
		t.Errorf("a spoofed first hop: %d, want 429", status)
	}
	// Another client behind the same proxy has its own slots.
	status, _, _ = rawGet(t, g.streamURL("ip-1", "timeout=1ms"), "X-Forwarded-For", "203.0.113.8")
	if status != http.StatusOK {
		t.Errorf("another address: %d, want 200", status)
	}
	if got := g.metric(t, "ssegate_refused_streams_total", "reason", "ip_connection_limit"); got != 3 {
		t.Errorf("refused{ip_connection_limit} = %v, want 3", got)
	}
	a.Close()
	streamtest.Eventually(t, "a slot freed", func() bool {
		status, _, _ := rawGet(t, g.streamURL("ip-1", "timeout=1ms"), "X-Forwarded-For", "203.0.113.7")
		return status == http.StatusOK
	})
}
