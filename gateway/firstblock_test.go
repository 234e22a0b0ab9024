package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/publisher"
)

// emptyBlocks returns the blocks of an SSE body (ended by a blank line)
// that carry no data: a WHATWG parser dispatches nothing for them, but
// @microsoft/fetch-event-source, tmaxmax/go-sse and r3labs/sse hand each to
// the application as an empty message, which JSON.parse throws on.
func emptyBlocks(body string) []string {
	var empty []string
	blocks := strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n\n")
	for _, b := range blocks[:len(blocks)-1] { // the last is what follows the final blank line
		if !strings.Contains("\n"+b, "\ndata:") {
			empty = append(empty, b)
		}
	}
	return empty
}

// readFor reads a stream's body for d (or until it ends).
func readFor(t *testing.T, url string, d time.Duration, header ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, bufio.NewReader(resp.Body))
	return b.String()
}

// TestNoEmptyBlocks: no stream sends a block without data: the retry hint
// (and a resume point) go out at once as lines of the first block, which
// the first event completes; refusals and shutdown kicks end without a
// blank line.
func TestNoEmptyBlocks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxConnectionsPerJob = 1
	cfg.Heartbeat = 200 * time.Millisecond
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("blocks")
	last := ok(job.Register(ctx))
	ok(e.pub.Job("blocks-fresh").Register(ctx))
	ok(e.pub.Job("blocks-done").Register(ctx))
	ok(e.pub.Job("blocks-done").Complete(ctx, "r", nil))

	check := func(name, body string) {
		t.Helper()
		if !strings.Contains(body, "retry: ") {
			t.Errorf("%s: no retry hint in %q", name, body)
		}
		if empty := emptyBlocks(body); len(empty) > 0 {
			t.Errorf("%s: blocks without data %q in %q", name, empty, body)
		}
	}
	// A resume that is up to date: nothing to replay, then heartbeats.
	done := make(chan string, 1)
	go func() { done <- readFor(t, g.streamURL("blocks"), 700*time.Millisecond, "Last-Event-ID", last) }()
	time.Sleep(200 * time.Millisecond)
	// The job's one stream is open: this one is refused (job limit).
	check("refused", readFor(t, g.streamURL("blocks"), 2*time.Second))
	resumed := <-done
	check("resumed", resumed)
	if !strings.Contains(resumed, "id: "+last+"\n") || !strings.Contains(resumed, "event: heartbeat") {
		t.Errorf("resumed: %q, want the resume point and heartbeats", resumed)
	}
	check("fresh", readFor(t, g.streamURL("blocks-fresh"), 300*time.Millisecond))
	check("finished", readFor(t, g.streamURL("blocks-done"), 2*time.Second))

	// A stream kicked by the shutdown.
	time.Sleep(300 * time.Millisecond) // the earlier streams have left the job
	body := make(chan string, 1)
	go func() { body <- readFor(t, g.streamURL("blocks"), 10*time.Second) }()
	time.Sleep(200 * time.Millisecond)
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	time.Sleep(100 * time.Millisecond)
	g.stop()
	check("shutdown", <-body)
}
