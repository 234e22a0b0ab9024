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
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, g.URL+path, nil)
		if err != nil {
			t.Fatal(err)
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
	resp, body := do(http.MethodHead, "/api/reports/head-job/stream")
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), http.MethodGet) {
		t.Errorf("HEAD on the stream: %d, Allow %q, %q; want 405 and Allow: GET", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
}
