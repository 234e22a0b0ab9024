package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/gateway"
)

// rawRequest sends req byte for byte (no client library normalizes it) and
// returns the parsed response and its body.
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP response to %q: %v", truncate(req, 120), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func get(path string, headers ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func method(m, path string) string {
	return m + " " + path + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
}

// TestBadInput sends malformed and hostile requests to every endpoint: each
// gets the documented JSON error and status, nothing panics, and nothing the
// client sent comes back as a header or an SSE field.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	must(t)(e.pub.Job("real").Register(context.Background()))
	addr := strings.TrimPrefix(g.URL, "http://")
	s := "/api/reports/real/stream"
	long := strings.Repeat("a", 129)

	tests := []struct {
		name   string
		req    string
		status int
		code   string
	}{
		// Job IDs.
		{"job ID too long (stream)", get("/api/reports/" + long + "/stream"), 400, "INVALID_JOB_ID"},
		{"job ID too long (snapshot)", get("/api/reports/" + long), 400, "INVALID_JOB_ID"},
		{"job ID far too long", get("/api/reports/" + strings.Repeat("a", 5000) + "/stream"), 400, "INVALID_JOB_ID"},
		{"job ID non-ASCII", get("/api/reports/j%C3%B6b/stream"), 400, "INVALID_JOB_ID"},
		{"job ID raw UTF-8", get("/api/reports/jöb/stream"), 400, "INVALID_JOB_ID"},
		{"job ID emoji", get("/api/reports/%F0%9F%9A%80"), 400, "INVALID_JOB_ID"},
		{"job ID with NUL", get("/api/reports/a%00b/stream"), 400, "INVALID_JOB_ID"},
		{"job ID with CRLF", get("/api/reports/a%0D%0AX-Evil:%201/stream"), 400, "INVALID_JOB_ID"},
		{"job ID with LF event", get("/api/reports/a%0Aevent:%20evil/stream"), 400, "INVALID_JOB_ID"},
		{"job ID with braces", get("/api/reports/%7Ba%7D/stream"), 400, "INVALID_JOB_ID"},
		{"job ID with space", get("/api/reports/a%20b"), 400, "INVALID_JOB_ID"},
		{"job ID with quote", get("/api/reports/a%22b/stream"), 400, "INVALID_JOB_ID"},
		{"job ID with percent", get("/api/reports/a%25b/stream"), 400, "INVALID_JOB_ID"},
		{"job ID unknown", get("/api/reports/nobody/stream"), 404, "JOB_NOT_FOUND"},
		{"job ID unknown snapshot", get("/api/reports/nobody"), 404, "JOB_NOT_FOUND"},
		// Path tricks.
		{"encoded slash", get("/api/reports/a%2Fb/stream"), 400, "INVALID_JOB_ID"},
		{"dot-dot", get("/api/reports/../healthz/stream"), 404, "NOT_FOUND"},
		{"dot-dot job", get("/api/reports/../stream"), 404, "JOB_NOT_FOUND"},
		{"encoded dot-dot", get("/api/reports/%2e%2e/%2e%2e/metrics"), 404, "NOT_FOUND"},
		{"double slash", get("//api/reports/real/stream"), 404, "NOT_FOUND"},
		{"trailing slash", get("/api/reports/real/stream/"), 404, "NOT_FOUND"},
		{"empty job ID", get("/api/reports//stream"), 400, "INVALID_JOB_ID"},
		{"unknown route", get("/api/jobs"), 404, "NOT_FOUND"},
		// timeout.
		{"timeout negative", get(s + "?timeout=-1"), 400, "INVALID_TIMEOUT"},
		{"timeout negative duration", get(s + "?timeout=-5s"), 400, "INVALID_TIMEOUT"},
		{"timeout zero", get(s + "?timeout=0"), 400, "INVALID_TIMEOUT"},
		{"timeout words", get(s + "?timeout=forever"), 400, "INVALID_TIMEOUT"},
		{"timeout float", get(s + "?timeout=1.5"), 400, "INVALID_TIMEOUT"},
		{"timeout hex", get(s + "?timeout=0x10"), 400, "INVALID_TIMEOUT"},
		{"timeout empty", get(s + "?timeout="), 400, "INVALID_TIMEOUT"},
		{"timeout CRLF", get(s + "?timeout=5s%0D%0AX-Evil:%201"), 400, "INVALID_TIMEOUT"},
		{"timeout NUL", get(s + "?timeout=5%00"), 400, "INVALID_TIMEOUT"},
		{"timeout plus", get(s + "?timeout=%2B5s"), 400, "INVALID_TIMEOUT"},
		{"timeout twice", get(s + "?timeout=1s&timeout=2s"), 400, "INVALID_QUERY"},
		// includeReport.
		{"includeReport garbage", get(s + "?includeReport=maybe"), 400, "INVALID_INCLUDE_REPORT"},
		{"includeReport number", get(s + "?includeReport=2"), 400, "INVALID_INCLUDE_REPORT"},
		{"includeReport CRLF", get(s + "?includeReport=true%0D%0A"), 400, "INVALID_INCLUDE_REPORT"},
		{"includeReport twice", get(s + "?includeReport=true&includeReport=false"), 400, "INVALID_QUERY"},
		{"snapshot includeReport garbage", get("/api/reports/real?includeReport=yes%00"), 400, "INVALID_INCLUDE_REPORT"},
		// Last-Event-ID.
		{"Last-Event-ID words", get(s, "Last-Event-ID: yesterday"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID no seq", get(s, "Last-Event-ID: 1764230400000"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID negative", get(s, "Last-Event-ID: -1-0"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID overflow", get(s, "Last-Event-ID: 18446744073709551616-0"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID overlong", get(s, "Last-Event-ID: "+strings.Repeat("1", 100)+"-0"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID with spaces inside", get(s, "Last-Event-ID: 1 -0"), 400, "INVALID_LAST_EVENT_ID"},
		{"Last-Event-ID non-ASCII", get(s, "Last-Event-ID: 1-0é"), 400, "INVALID_LAST_EVENT_ID"},
		{"lastEventId query CRLF", get(s + "?lastEventId=1-0%0D%0Aevent:%20evil"), 400, "INVALID_LAST_EVENT_ID"},
		{"lastEventId query NUL", get(s + "?lastEventId=1-0%00"), 400, "INVALID_LAST_EVENT_ID"},
		{"lastEventId twice", get(s + "?lastEventId=1-0&lastEventId=2-0"), 400, "INVALID_QUERY"},
		// Methods.
		{"POST stream", method("POST", s), 405, "METHOD_NOT_ALLOWED"},
		{"PUT snapshot", method("PUT", "/api/reports/real"), 405, "METHOD_NOT_ALLOWED"},
		{"DELETE snapshot", method("DELETE", "/api/reports/real"), 405, "METHOD_NOT_ALLOWED"},
		{"PATCH stream", method("PATCH", s), 405, "METHOD_NOT_ALLOWED"},
		{"POST metrics", method("POST", "/metrics"), 405, "METHOD_NOT_ALLOWED"},
		{"BREW stream", method("BREW", s), 405, "METHOD_NOT_ALLOWED"},
		// Size.
		{"oversized header", get(s, "X-Big: "+strings.Repeat("x", 40<<10)), 431, "HEADERS_TOO_LARGE"},
		{"many headers", get(s, strings.Repeat("X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 1200)+"X-End: 1"), 431, "HEADERS_TOO_LARGE"},
		{"oversized query", get(s + "?x=" + strings.Repeat("y", 40<<10)), 431, "HEADERS_TOO_LARGE"},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	t.Run("cases", func(t *testing.T) { // returns once every parallel case is done
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				checkBadInput(t, addr, tt.req, tt.status, tt.code)
			})
		}
	})
	if got := g.metric(t, "ssegate_panics_total"); got != 0 {
		t.Errorf("ssegate_panics_total = %v", got)
	}
	if got := g.metric(t, "ssegate_stream_requests_total", "answer", "stream"); got != 0 {
		t.Errorf("a bad request opened a stream: stream_requests{stream} = %v", got)
	}
	if got := g.metric(t, "ssegate_stream_requests_total", "answer", "bad_request"); got < 30 {
		t.Errorf("stream_requests{bad_request} = %v", got)
	}
}

// checkBadInput sends req and checks the JSON error it gets, and that
// nothing the request carried came back as a header or an SSE field.
func checkBadInput(t *testing.T, addr, req string, status int, code string) {
	t.Helper()
	resp, body := rawRequest(t, addr, req)
	var got struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%d body %q is not the JSON error: %v", resp.StatusCode, truncate(body, 200), err)
	}
	if resp.StatusCode != status || got.Code != code || got.Error == "" {
		t.Errorf("got %d %s %q; want %d %s", resp.StatusCode, got.Code, got.Error, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	for k := range resp.Header {
		if strings.EqualFold(k, "X-Evil") {
			t.Errorf("request data came back as header %s", k)
		}
	}
	if strings.Contains(body, "event: evil") {
		t.Errorf("request data came back as an SSE field: %q", body)
	}
}

func TestPanicBecomesJSON500(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	g := startGatewayWith(t, cfg, e.rdb, func(gw *gateway.Server) {
		gw.Handle(http.MethodGet, "/boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}))
	})
	status, h, body := rawGet(t, g.URL+"/boom")
	var got struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &got); err != nil || status != 500 || got.Code != "INTERNAL" ||
		!strings.HasPrefix(h.Get("Content-Type"), "application/json") || strings.Contains(body, "boom") {
		t.Errorf("got %d %q (%v); want 500 INTERNAL without the panic value", status, body, err)
	}
	if got := g.metric(t, "ssegate_panics_total"); got != 1 {
		t.Errorf("ssegate_panics_total = %v, want 1", got)
	}
	if !strings.Contains(g.logs.String(), "handler panic") {
		t.Error("the panic was not logged")
	}
	// The server still serves.
	if status, _, _ := rawGet(t, g.URL+"/healthz"); status != 200 {
		t.Errorf("healthz after a panic: %d", status)
	}
}
