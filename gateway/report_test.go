package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// rawResponse sends a GET with headers and returns the response and its body
// (read raw: no transparent gzip).
func rawResponse(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestReportEndpoint: GET /api/reports/:jobId/report serves a completed
// job's report (ETag, 304, gzip when asked), 404 when there is none, 409
// while the job runs; a complete event or snapshot that does not inline a
// report over the limit says so, with the report's URL.
func TestReportEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.ReportMaxBytes = 1000
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	big := json.RawMessage(`{"rows":"` + strings.Repeat("x", 5000) + `"}`)
	ok(e.pub.Job("rep-big").Register(ctx))
	ok(e.pub.Job("rep-big").Complete(ctx, "r-1", big))
	ok(e.pub.Job("rep-none").Register(ctx))
	ok(e.pub.Job("rep-none").Complete(ctx, "r-2", nil))
	ok(e.pub.Job("rep-running").Register(ctx))

	resp, body := rawResponse(t, g.URL+"/api/reports/rep-big/report")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || !bytes.Equal(body, big) || etag == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("report: %d %s etag %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), etag, len(body))
	}
	if resp, _ := rawResponse(t, g.URL+"/api/reports/rep-big/report", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	resp, body = rawResponse(t, g.URL+"/api/reports/rep-big/report", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("Accept-Encoding gzip: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	} else if zr, err := gzip.NewReader(bytes.NewReader(body)); err != nil {
		t.Error(err)
	} else if got, _ := io.ReadAll(zr); !bytes.Equal(got, big) {
		t.Errorf("gunzipped report differs (%d bytes)", len(got))
	}
	for _, tc := range []struct {
		job    string
		status int
		code   string
	}{
		{"rep-none", 404, "REPORT_NOT_FOUND"}, {"rep-running", 409, "JOB_RUNNING"}, {"rep-unknown", 404, "JOB_NOT_FOUND"}, {"bad!id", 400, "INVALID_JOB_ID"},
	} {
		resp, body := rawResponse(t, g.URL+"/api/reports/"+tc.job+"/report")
		var e struct{ Code string }
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode != tc.status || e.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.job, resp.StatusCode, body, tc.status, tc.code)
		}
	}

	// The stream and the snapshot say why the report is not inline.
	_, _, sse := rawGet(t, g.streamURL("rep-big", "includeReport=true"))
	msgs := decode(t, sse)
	var ce struct {
		IncludeReport  bool   `json:"includeReport"`
		ReportTooLarge bool   `json:"reportTooLarge"`
		ReportURL      string `json:"reportUrl"`
	}
	if len(msgs) != 1 || json.Unmarshal(msgs[0].Data, &ce) != nil || ce.IncludeReport || !ce.ReportTooLarge || ce.ReportURL != "/api/reports/rep-big/report" {
		t.Errorf("complete over the limit: %q", sse)
	}
	_, body = rawResponse(t, g.URL+"/api/reports/rep-big?includeReport=true")
	var snap struct {
		Report         json.RawMessage `json:"report"`
		ReportTooLarge bool            `json:"reportTooLarge"`
		ReportURL      string          `json:"reportUrl"`
	}
	if json.Unmarshal(body, &snap) != nil || snap.Report != nil || !snap.ReportTooLarge || snap.ReportURL != "/api/reports/rep-big/report" {
		t.Errorf("snapshot over the limit: %s", body)
	}
}
