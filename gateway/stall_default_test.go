package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// TestStalledClientResumesLosslessByDefault: with the default settings, a
// client that stops reading is cut while its resume point is still in the
// job's retained history (about 1,000 events), so its resume is exact, not a
// reset. The kernel's buffers are what it has not read: an autotuned send
// buffer can hold megabytes, by then thousands of events behind.
func TestStalledClientResumesLosslessByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig()) // default write timeout, send buffer and client buffer
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("stall-default")
	ok(job.Register(ctx))
	addr := strings.TrimPrefix(g.URL, "http://")
	conn, err := net.Dial("tcp", addr) // default socket buffers; it never reads
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /api/reports/stall-default/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	streamtest.Eventually(t, "stream open", func() bool { return g.metric(t, "ssegate_connections") == 1 })
	// Ordinary progress events, as fast as a worker can publish them, until
	// the gateway cuts the stalled client, and well past the history.
	name := strings.Repeat("x", 200)
	step := 0
	for step < 6000 && g.metric(t, "ssegate_slow_client_disconnects_total") == 0 {
		for range 100 {
			step++
			ok(job.Progress(ctx, publisher.Step{Step: step, Total: 100000, Name: name}))
		}
	}
	streamtest.Eventually(t, "stalled client cut", func() bool {
		return g.metric(t, "ssegate_slow_client_disconnects_total") >= 1
	})
	// What the client had received, as a browser would parse it.
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	dec := event.NewDecoder(strings.NewReader(string(body)))
	n := 0
	for {
		if _, err := dec.Next(); err != nil {
			break
		}
		n++
	}
	status, _, rest := rawGet(t, g.streamURL("stall-default", "timeout=300ms"), "Last-Event-ID", dec.LastEventID())
	msgs := decode(t, rest)
	if status != 200 || len(msgs) == 0 || msgs[0].Event == "reset" {
		t.Errorf("the stalled client got %d events (%d bytes) before the cut at step %d; its resume from %s began with %+v, want the events it missed",
			n, len(body), step, dec.LastEventID(), msgs[:min(1, len(msgs))])
	}
	if behind := step + 1 - n; behind >= 1000 {
		t.Errorf("the stalled client was %d events behind when it was cut, want under the retained history (about 1,000)", behind)
	}
	t.Logf("stalled client: %d events (%d KiB) received before the cut; %d published by then", n, len(body)>>10, step+1)
}
