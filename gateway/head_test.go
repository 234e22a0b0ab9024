package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// HEAD is GET without the body (RFC 9110, 9.3.2) on every route but the
// stream: a health check that sends HEAD, or curl -I, gets the status and
// headers GET would. A stream has nothing to say before it is opened, so
// HEAD on it is 405, with Allow naming GET.
func TestHeadIsGetWithoutBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ctx := context.Background()
	job := e.pub.Job("head-job")
	if _, err := job.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := job.Complete(ctx, "r-1", json.RawMessage(`{"rows":3}`)); err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, g.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{
		"/healthz", "/readyz", "/metrics",
		"/api/reports/head-job", "/api/reports/head-job?includeReport=true", "/api/reports/head-job/report",
		"/api/reports/no-such-job", "/api/reports/no-such-job/report", "/api/reports/bad%20id",
	} {
		get, getBody := do(http.MethodGet, path)
		head, headBody := do(http.MethodHead, path)
		if head.StatusCode != get.StatusCode {
			t.Errorf("HEAD %s: %d; GET answers %d", path, head.StatusCode, get.StatusCode)
		}
		for _, h := range []string{"Content-Type", "Cache-Control", "ETag"} {
			if head.Header.Get(h) != get.Header.Get(h) {
				t.Errorf("HEAD %s: %s %q; GET says %q", path, h, head.Header.Get(h), get.Header.Get(h))
			}
		}
		if headBody != "" {
			t.Errorf("HEAD %s: a body, %q", path, headBody)
		}
		if getBody == "" {
			t.Errorf("GET %s: no body", path)
		}
	}
	// Asked for gzip, the report's HEAD says so as GET does (an explicit
	// Accept-Encoding keeps the client from decoding, and the header).
	gz := []string{"Accept-Encoding", "gzip"}
	get, _ := do(http.MethodGet, "/api/reports/head-job/report", gz...)
	head, headBody := do(http.MethodHead, "/api/reports/head-job/report", gz...)
	for _, h := range []string{"Content-Encoding", "Content-Type", "Vary", "ETag"} {
		if head.Header.Get(h) != get.Header.Get(h) {
			t.Errorf("HEAD of the report with gzip: %s %q; GET says %q", h, head.Header.Get(h), get.Header.Get(h))
		}
	}
	if get.Header.Get("Content-Encoding") != "gzip" || headBody != "" {
		t.Errorf("report with gzip: GET Content-Encoding %q, HEAD body %q", get.Header.Get("Content-Encoding"), headBody)
	}
	// The access log counts the body sent: none.
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if strings.Contains(line, "method=HEAD") && strings.Contains(line, "msg=request") && !strings.Contains(line, " bytes=0 ") {
			t.Errorf("a HEAD's access log counts bytes it never sent: %s", line)
		}
	}

	resp, body := do(http.MethodHead, "/api/reports/head-job/stream")
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), http.MethodGet) {
		t.Errorf("HEAD on the stream: %d, Allow %q, %q; want 405 and Allow: GET", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
}
