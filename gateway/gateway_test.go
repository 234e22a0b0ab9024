package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/sseclient"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

func TestCompleteJobFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	job := e.pub.Job("flow-1")
	ok(job.Register(context.Background()))

	plain := streamtest.Open(t, []string{g.streamURL("flow-1")}, "")
	withReport := streamtest.Open(t, []string{g.streamURL("flow-1", "includeReport=true")}, "")
	plain.WaitEvents(t, 1)
	withReport.WaitEvents(t, 1)

	ctx := context.Background()
	ok(job.Status(ctx, event.StatusProcessing))
	for s := 1; s <= 5; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 5, Name: fmt.Sprintf("step %d", s)}))
	}
	ok(job.Complete(ctx, "r-1", json.RawMessage(`{"rows":[1,2,3]}`)))

	for _, s := range []*streamtest.Stream{plain, withReport} {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
	}
	want := e.history("flow-1")
	streamtest.AssertExactlyOnce(t, plain.Events(), want)
	streamtest.AssertExactlyOnce(t, withReport.Events(), want)

	last := func(s *streamtest.Stream) event.CompleteEvent {
		ev := s.Events()
		var c event.CompleteEvent
		if err := json.Unmarshal(ev[len(ev)-1].Data, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := last(plain); c.IncludeReport || c.Report != nil || c.ReportID != "r-1" {
		t.Errorf("without includeReport: %+v", c)
	}
	if c := last(withReport); !c.IncludeReport || string(c.Report) != `{"rows":[1,2,3]}` {
		t.Errorf("with includeReport: %+v", c)
	}
	var p event.ProgressEvent
	if err := json.Unmarshal(plain.Events()[3].Data, &p); err != nil || p.Step != 2 || p.Percentage != 40 || p.CurrentStep != "step 2" {
		t.Errorf("progress 2 = %+v, %v", p, err)
	}
	streamtest.Eventually(t, "streams closed", func() bool { return g.metric(t, "ssegate_connections") == 0 })
	if got := g.metric(t, "ssegate_connections_closed_total", "reason", "finished"); got != 2 {
		t.Errorf("closed{finished} = %v, want 2", got)
	}
}

func TestJobFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("fail-1")
	ok(job.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL("fail-1")}, "")
	s.WaitEvents(t, 1)
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 3}))
	ok(job.Fail(ctx, "upstream timed out", "UPSTREAM_TIMEOUT", true))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	got := s.Events()
	streamtest.AssertExactlyOnce(t, got, e.history("fail-1"))
	var ev event.ErrorEvent
	if err := json.Unmarshal(got[len(got)-1].Data, &ev); err != nil || ev.Code != "UPSTREAM_TIMEOUT" || !ev.Retryable || ev.Error != "upstream timed out" {
		t.Errorf("error event = %+v, %v", ev, err)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	must(t)(e.pub.Job("exists").Register(context.Background()))
	tests := []struct {
		name   string
		path   string
		header []string
		status int
		code   string
	}{
		{"unknown job", "/api/reports/nope/stream", nil, 404, "JOB_NOT_FOUND"},
		{"unknown job snapshot", "/api/reports/nope", nil, 404, "JOB_NOT_FOUND"},
		{"job ID too long", "/api/reports/" + strings.Repeat("a", 129) + "/stream", nil, 400, "INVALID_JOB_ID"},
		{"job ID with a space", "/api/reports/a%20b/stream", nil, 400, "INVALID_JOB_ID"},
		{"job ID not ASCII", "/api/reports/j%C3%B6b/stream", nil, 400, "INVALID_JOB_ID"},
		{"bad timeout", "/api/reports/exists/stream?timeout=soon", nil, 400, "INVALID_TIMEOUT"},
		{"negative timeout", "/api/reports/exists/stream?timeout=-5s", nil, 400, "INVALID_TIMEOUT"},
		{"zero timeout", "/api/reports/exists/stream?timeout=0", nil, 400, "INVALID_TIMEOUT"},
		{"bad includeReport", "/api/reports/exists/stream?includeReport=maybe", nil, 400, "INVALID_INCLUDE_REPORT"},
		{"bad Last-Event-ID", "/api/reports/exists/stream", []string{"Last-Event-ID", "yesterday"}, 400, "INVALID_LAST_EVENT_ID"},
		{"bad lastEventId", "/api/reports/exists/stream?lastEventId=1-x", nil, 400, "INVALID_LAST_EVENT_ID"},
		{"duplicate parameter", "/api/reports/exists/stream?timeout=1s&timeout=2s", nil, 400, "INVALID_QUERY"},
		{"snapshot bad includeReport", "/api/reports/exists?includeReport=2", nil, 400, "INVALID_INCLUDE_REPORT"},
		{"no such route", "/api/nothing", nil, 404, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := rawGet(t, g.URL+tt.path, tt.header...)
			var got struct{ Error, Code string }
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if status != tt.status || got.Code != tt.code || got.Error == "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Errorf("got %d %s %q; want %d %s", status, h.Get("Content-Type"), body, tt.status, tt.code)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/api/reports/exists/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST stream: %d, want 405", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestFinishedJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	done := e.pub.Job("done")
	first := ok(done.Register(ctx))
	mid := ok(done.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	ok(done.Progress(ctx, publisher.Step{Step: 2, Total: 2}))
	final := ok(done.Complete(ctx, "r-9", json.RawMessage(`{"ok":true}`)))
	failed := e.pub.Job("failed")
	ok(failed.Register(ctx))
	failedID := ok(failed.Fail(ctx, "no data", "NO_DATA", false))

	t.Run("complete answered at once and closed", func(t *testing.T) {
		status, h, body := rawGet(t, g.streamURL("done", "includeReport=true"))
		msgs := decode(t, body)
		if status != 200 || h.Get("Content-Type") != "text/event-stream" || len(msgs) != 1 || msgs[0].Event != "complete" || msgs[0].ID != final ||
			!strings.Contains(string(msgs[0].Data), `"report":{"ok":true}`) {
			t.Errorf("got %d %q", status, body)
		}
	})
	t.Run("failed answered at once and closed", func(t *testing.T) {
		_, _, body := rawGet(t, g.streamURL("failed"))
		msgs := decode(t, body)
		if len(msgs) != 1 || msgs[0].Event != "error" || msgs[0].ID != failedID || !strings.Contains(string(msgs[0].Data), `"code":"NO_DATA"`) {
			t.Errorf("got %q", body)
		}
	})
	t.Run("resume after the terminal event is 204", func(t *testing.T) {
		for _, h := range [][]string{{"Last-Event-ID", final}, {"Accept", "text/event-stream", "Last-Event-ID", final}} {
			if status, _, body := rawGet(t, g.streamURL("done"), h...); status != http.StatusNoContent || body != "" {
				t.Errorf("%v: got %d %q", h, status, body)
			}
		}
		if status, _, _ := rawGet(t, g.streamURL("done", "lastEventId="+final)); status != http.StatusNoContent {
			t.Errorf("lastEventId fallback: %d", status)
		}
		// Visible to operators: a browser that keeps reconnecting after the
		// end would show up here.
		if got := g.metric(t, "ssegate_stream_requests_total", "answer", "no_content"); got != 3 {
			t.Errorf("stream_requests{no_content} = %v, want 3", got)
		}
		if got := g.metric(t, "ssegate_stream_requests_total", "answer", "stream"); got != 2 {
			t.Errorf("stream_requests{stream} = %v, want 2", got)
		}
	})
	t.Run("resume before the end gets the rest and closes", func(t *testing.T) {
		_, _, body := rawGet(t, g.streamURL("done"), "Last-Event-ID", mid)
		msgs := decode(t, body)
		h := e.history("done")
		streamtest.AssertExactlyOnce(t, msgs, h[2:])
		if !strings.Contains(body, "id: "+mid+"\n") {
			t.Errorf("resume point not repeated first: %q", body)
		}
	})
	t.Run("resume from the first event", func(t *testing.T) {
		_, _, body := rawGet(t, g.streamURL("done"), "Last-Event-ID", first)
		streamtest.AssertExactlyOnce(t, decode(t, body), e.history("done")[1:])
	})
}

func TestSnapshotEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("snap")
	ok(job.Register(ctx))
	get := func(query string) map[string]any {
		t.Helper()
		status, h, body := rawGet(t, g.URL+"/api/reports/snap"+query)
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil || status != 200 || h.Get("Cache-Control") != "no-store" {
			t.Fatalf("%d %q: %v", status, body, err)
		}
		return m
	}
	m := get("")
	if m["status"] != "pending" || m["progress"] != nil || m["reportId"] != nil || m["error"] != nil || m["lastEventId"] == "" || m["updatedAt"] == "" {
		t.Errorf("pending snapshot = %v", m)
	}
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 4, Name: "Loading"}))
	m = get("")
	p, _ := m["progress"].(map[string]any)
	if m["status"] != "processing" || p["currentStep"] != "Loading" || p["percentage"] != 25.0 {
		t.Errorf("processing snapshot = %v", m)
	}
	last := ok(job.Complete(ctx, "r-2", json.RawMessage(`[1,2]`)))
	m = get("?includeReport=true")
	if m["status"] != "completed" || m["reportId"] != "r-2" || m["lastEventId"] != last || fmt.Sprint(m["report"]) != "[1 2]" {
		t.Errorf("completed snapshot = %v", m)
	}
	if m = get(""); m["report"] != nil {
		t.Errorf("report sent without includeReport: %v", m)
	}
}

func TestHeartbeatAndTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.Heartbeat = 50 * time.Millisecond
	g := e.gateway(cfg)
	must(t)(e.pub.Job("quiet").Register(context.Background()))
	// The stream must end by itself at its timeout, after some heartbeats.
	status, _, body := rawGet(t, g.streamURL("quiet", "timeout=400ms"))
	msgs := decode(t, body)
	beats := 0
	for _, m := range msgs {
		if m.Event == "heartbeat" {
			beats++
			var hb event.HeartbeatEvent
			if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Type != event.TypeHeartbeat || hb.Timestamp.IsZero() {
				t.Errorf("heartbeat data %q: %v", m.Data, err)
			}
		}
	}
	if status != 200 || beats == 0 || msgs[0].Event != "status" {
		t.Errorf("status %d, %d heartbeats, body %q", status, beats, body)
	}
	if strings.Count(body, "id: ") != 1 {
		t.Errorf("heartbeats must not carry an id: %q", body)
	}
	streamtest.Eventually(t, "timeout counted", func() bool {
		return g.metric(t, "ssegate_connections_closed_total", "reason", "timeout") == 1
	})
}

func TestManyClientsOneJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("crowd")
	ok(job.Register(ctx))
	const clients, steps = 100, 50
	streams := make([]*streamtest.Stream, clients)
	for i := range streams {
		streams[i] = streamtest.Open(t, []string{g.streamURL("crowd")}, "")
	}
	for _, s := range streams {
		s.WaitEvents(t, 1)
	}
	// A stream may be sent back to resume while it starts (a pub/sub
	// connection lost on a loaded machine): it is open again soon after.
	streamtest.Eventually(t, "every stream open", func() bool { return g.metric(t, "ssegate_connections") == clients })
	if got := g.metric(t, "ssegate_subscribed_jobs"); got != 1 {
		t.Errorf("ssegate_subscribed_jobs = %v, want 1 for one job", got)
	}
	if n := e.redis.Do(t, "PUBSUB", "NUMSUB", keys.Live("crowd")).([]any)[1].(int64); n != 1 {
		t.Errorf("Redis sees %d subscriptions to the job, want 1 for %d clients", n, clients)
	}
	for s := 1; s <= steps; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: steps}))
	}
	ok(job.Complete(ctx, "r", nil))
	want := e.history("crowd")
	for _, s := range streams {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), want)
	}
}

func TestDisconnectCleansUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ctx := context.Background()
	var streams []*streamtest.Stream
	for j := range 5 {
		id := fmt.Sprintf("leave-%d", j)
		must(t)(e.pub.Job(id).Register(ctx))
		for range 4 {
			streams = append(streams, streamtest.Open(t, []string{g.streamURL(id)}, ""))
		}
	}
	for _, s := range streams {
		s.WaitEvents(t, 1)
	}
	if got := g.metric(t, "ssegate_connections"); got != 20 {
		t.Fatalf("ssegate_connections = %v, want 20", got)
	}
	if got := g.metric(t, "ssegate_subscribed_jobs"); got != 5 {
		t.Fatalf("ssegate_subscribed_jobs = %v, want 5", got)
	}
	for _, s := range streams {
		s.Close()
	}
	streamtest.Eventually(t, "gauges back to 0", func() bool {
		return g.metric(t, "ssegate_connections") == 0 && g.metric(t, "ssegate_subscribed_jobs") == 0
	})
	streamtest.Eventually(t, "no job channel left subscribed in Redis", func() bool {
		chans := e.redis.Do(t, "PUBSUB", "CHANNELS", "ssegate:{*}:live").([]any)
		return len(chans) == 0
	})
	if got := g.metric(t, "ssegate_connections_closed_total", "reason", "client_gone"); got != 20 {
		t.Errorf("closed{client_gone} = %v, want 20", got)
	}
}

func TestResumeNoLossNoDuplicate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("resume")
	ok(job.Register(ctx))
	first := streamtest.Open(t, []string{g.streamURL("resume")}, "")
	first.WaitEvents(t, 1)
	for s := 1; s <= 10; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 20}))
	}
	got := first.WaitEvents(t, 11)
	first.Close()
	for s := 11; s <= 20; s++ { // published while the client is away
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 20}))
	}
	second := streamtest.Open(t, []string{g.streamURL("resume")}, first.Client.LastEventID())
	second.WaitEvents(t, 10)
	ok(job.Complete(ctx, "r", nil))
	if err := second.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, append(got, second.Events()...), e.history("resume"))
}

func TestTwoInstances(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g1 := e.gateway(testConfig())
	g2 := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("two")
	ok(job.Register(ctx))
	s1 := streamtest.Open(t, []string{g1.streamURL("two")}, "")
	s1.WaitEvents(t, 1)
	for s := 1; s <= 10; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 20}))
	}
	half := s1.WaitEvents(t, 11)
	s1.Close()
	for s := 11; s <= 15; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 20}))
	}
	s2 := streamtest.Open(t, []string{g2.streamURL("two")}, s1.Client.LastEventID())
	s2.WaitEvents(t, 5)
	for s := 16; s <= 20; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: 20}))
	}
	ok(job.Complete(ctx, "r", nil))
	if err := s2.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, append(half, s2.Events()...), e.history("two"))
}

func TestPubSubKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("CLIENT KILL TYPE pubsub needs a real redis-server")
	}
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	jobs := []string{"kill-a", "kill-b", "kill-c"}
	var streams []*streamtest.Stream
	for _, id := range jobs {
		ok(e.pub.Job(id).Register(ctx))
		for range 3 {
			streams = append(streams, streamtest.Open(t, []string{g.streamURL(id)}, ""))
		}
	}
	for _, s := range streams {
		s.WaitEvents(t, 1)
	}
	const steps = 300
	var wg sync.WaitGroup
	for _, id := range jobs {
		wg.Go(func() {
			job := e.pub.Job(id)
			for s := 1; s <= steps; s++ {
				ok(job.Progress(ctx, publisher.Step{Step: s, Total: steps}))
				if s%5 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			ok(job.Complete(ctx, "r", nil))
		})
	}
	for range 3 {
		time.Sleep(50 * time.Millisecond)
		e.redis.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	wg.Wait()
	for i, s := range streams {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), e.history(jobs[i/3]))
	}
	if got := g.metric(t, "ssegate_redis_reconnects_total"); got < 1 {
		t.Errorf("ssegate_redis_reconnects_total = %v after CLIENT KILL", got)
	}
	var reasons []string
	for _, r := range []string{"slow_client", "resync", "redis_error", "client_gone", "finished"} {
		reasons = append(reasons, fmt.Sprintf("%s=%v", r, g.metric(t, "ssegate_connections_closed_total", "reason", r)))
	}
	t.Logf("pub/sub reconnects %v; client reconnects %v; closed: %v", g.metric(t, "ssegate_redis_reconnects_total"),
		g.metric(t, "ssegate_connections_opened_total")-float64(len(streams)), reasons)
}

// Compile-time use of protocol in this file's helpers.
var _ = protocol.ParseID

// TestStreamPaths runs a job and a resume through every way a stream can be
// served: HTTP/1.1 taken over from net/http (the default), HTTP/1.1 left
// with net/http, HTTP/1.0 (no chunking) and HTTP/2 without TLS (never taken
// over).
func TestStreamPaths(t *testing.T) {
	t.Parallel()
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2.CloseIdleConnections)
	for _, tc := range []struct {
		name       string
		noTakeOver bool
		client     func(*sseclient.Client)
		proto      string
	}{
		{"HTTP/1.1 taken over", false, nil, "HTTP/1.1"},
		{"HTTP/1.1 with net/http", true, nil, "HTTP/1.1"},
		{"HTTP/2 cleartext", false, func(c *sseclient.Client) { c.HTTPClient = &http.Client{Transport: h2} }, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			cfg := testConfig()
			cfg.NoTakeOver = tc.noTakeOver
			g := e.gateway(cfg)
			ok := must(t)
			ctx := context.Background()
			job := e.pub.Job("paths")
			ok(job.Register(ctx))
			var configure []func(*sseclient.Client)
			if tc.client != nil {
				configure = append(configure, tc.client)
			}
			s := streamtest.Open(t, []string{g.streamURL("paths", "includeReport=true")}, "", configure...)
			s.WaitEvents(t, 1)
			for i := 1; i <= 5; i++ {
				ok(job.Progress(ctx, publisher.Step{Step: i, Total: 10}))
			}
			first := s.WaitEvents(t, 6)
			s.Close()
			for i := 6; i <= 10; i++ {
				ok(job.Progress(ctx, publisher.Step{Step: i, Total: 10}))
			}
			rest := streamtest.Open(t, []string{g.streamURL("paths", "includeReport=true")}, s.Client.LastEventID(), configure...)
			rest.WaitEvents(t, 5)
			ok(job.Complete(ctx, "r", json.RawMessage(`{"n":10}`)))
			if err := rest.WaitDone(t); err != nil {
				t.Fatal(err)
			}
			streamtest.AssertExactlyOnce(t, append(first, rest.Events()...), e.history("paths"))
			if last := rest.Events()[len(rest.Events())-1]; !strings.Contains(string(last.Data), `"report":{"n":10}`) {
				t.Errorf("complete = %s", last.Data)
			}

			// The response head, as the client saw it.
			req, _ := http.NewRequest(http.MethodGet, g.streamURL("paths"), nil)
			client := http.DefaultClient
			if tc.client != nil {
				client = &http.Client{Transport: h2}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			h := resp.Header
			if resp.Proto != tc.proto || h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" ||
				h.Get("X-Accel-Buffering") != "no" || !strings.Contains(string(body), "event: complete") {
				t.Errorf("%s %v %q", resp.Proto, h, body)
			}
			// A finished job's answer stays with net/http, which keeps the
			// connection alive (TestConnectionHeader has the taken-over
			// streams, which say close).
			if resp.Close || h.Get("Connection") != "" {
				t.Errorf("%s: close=%v Connection=%q, want the connection kept alive", resp.Proto, resp.Close, h.Get("Connection"))
			}
			streamtest.Eventually(t, "streams closed", func() bool { return g.metric(t, "ssegate_connections") == 0 })
		})
	}
}

func TestHTTP10Stream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	ok(e.pub.Job("old").Register(ctx))
	addr := strings.TrimPrefix(g.URL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(conn, "GET /api/reports/old/stream HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proto != "HTTP/1.0" || len(resp.TransferEncoding) != 0 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("head: %s %v %v", resp.Proto, resp.TransferEncoding, resp.Header)
	}
	dec := event.NewDecoder(resp.Body)
	if m, err := dec.Next(); err != nil || m.Event != "status" {
		t.Fatalf("first event %+v, %v", m, err)
	}
	ok(e.pub.Job("old").Complete(ctx, "r", nil))
	for {
		m, err := dec.Next()
		if err != nil {
			t.Fatalf("before complete: %v", err)
		}
		if m.Event == "complete" {
			break
		}
	}
	if _, err := dec.Next(); err != io.EOF {
		t.Errorf("after complete: %v, want the connection closed", err)
	}
}
