package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// TestInvalidEventsAreDropped: a buggy worker writes events that are not of
// the model straight into Redis (XADD to the stream, PUBLISH of the live
// message). None reaches a client, live or replayed; each is counted by
// reason; the valid events around them flow on.
func TestInvalidEventsAreDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	const job = "bad-data"
	j := e.pub.Job(job)
	ok(j.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL(job)}, "")
	s.WaitEvents(t, 1)

	const ts = `"timestamp":"2026-11-27T03:40:30.123Z"`
	bad := []struct{ typ, data, reason string }{
		{"progress", `not json`, event.InvalidJSON},
		{"progress", `["an","array"]`, event.InvalidJSON},
		{"status", `{"type":"status","jobId":"someone-else","status":"processing",` + ts + `}`, event.InvalidJob},
		{"bogus", `{"type":"bogus","jobId":"bad-data",` + ts + `}`, event.InvalidType},
		{"status", `{"type":"status","jobId":"bad-data","status":"processing","timestamp":"later"}`, event.InvalidTimestamp},
		{"progress", `{"type":"progress","jobId":"bad-data","step":"two","totalSteps":8,` + ts + `}`, event.InvalidShape},
	}
	for _, b := range bad {
		// What a worker that skips the publish script would write.
		id, err := e.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Events(job), Values: []any{"type", b.typ, "data", b.data}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := protocol.ParseID(id)
		if err := e.rdb.Publish(ctx, keys.Live(job), protocol.EncodeLive(pid, event.Type(b.typ), b.data)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ok(j.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	ok(j.Complete(ctx, "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	// A resume from the start replays the stream: the same events only.
	first := s.Events()[0].ID
	resumed := streamtest.Open(t, []string{g.streamURL(job)}, first)
	if err := resumed.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	for _, got := range [][]event.Message{s.Events(), resumed.Events()} {
		var types []string
		for _, m := range got {
			var head struct{ Type, JobID string }
			if err := json.Unmarshal(m.Data, &head); err != nil || head.JobID != job || head.Type != m.Event {
				t.Errorf("a client got %s %q", m.Event, m.Data)
			}
			types = append(types, m.Event)
		}
		if len(types) == 0 || types[len(types)-1] != "complete" {
			t.Errorf("a client got %v, want the valid events up to complete", types)
		}
	}
	if n := len(s.Events()); n != 3 { // status (snapshot), progress, complete
		t.Errorf("the live client got %d events, want 3", n)
	}
	for _, b := range bad {
		if got := g.metric(t, "ssegate_invalid_events_total", "reason", b.reason); got < 1 {
			t.Errorf("ssegate_invalid_events_total{reason=%q} = %v", b.reason, got)
		}
	}
}

// TestUnreadableTerminalEvent: a finished job whose stored terminal event
// cannot be read still gets a terminal event, with the job's last event ID,
// so the client stops (its reconnect gets 204) instead of reconnecting for
// ever: a complete without its report, or an error saying so.
func TestUnreadableTerminalEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	for _, tc := range []struct{ job, want string }{{"unreadable-done", "complete"}, {"unreadable-failed", "error"}} {
		j := e.pub.Job(tc.job)
		ok(j.Register(ctx))
		var last string
		if tc.want == "complete" {
			last = ok(j.Complete(ctx, "r-1", json.RawMessage(`{"n":1}`)))
		} else {
			last = ok(j.Fail(ctx, "boom", "X", false))
		}
		if err := e.rdb.HSet(ctx, keys.State(tc.job), protocol.FieldResult, "{garbage").Err(); err != nil {
			t.Fatal(err)
		}
		status, _, body := rawGet(t, g.streamURL(tc.job, "includeReport=true"), "Accept", "text/event-stream")
		got := decode(t, body)
		if status != 200 || len(got) != 1 || got[0].Event != tc.want || got[0].ID != last {
			t.Fatalf("%s: %d %q, want one %s event with ID %s", tc.job, status, body, tc.want, last)
		}
		var head struct{ JobID, Code string }
		if err := json.Unmarshal(got[0].Data, &head); err != nil || head.JobID != tc.job {
			t.Errorf("%s: data %s", tc.job, got[0].Data)
		}
		if tc.want == "error" && head.Code != "UNREADABLE_EVENT" {
			t.Errorf("%s: code %q, want UNREADABLE_EVENT", tc.job, head.Code)
		}
		if status, _, _ := rawGet(t, g.streamURL(tc.job), "Last-Event-ID", last); status != 204 {
			t.Errorf("%s: reconnect with the terminal ID: %d, want 204", tc.job, status)
		}
	}
}

// TestVanishedJob: a job whose keys disappear (deleted, flushed, evicted,
// expired) ends its streams within about a heartbeat interval, and a
// reconnect gets the 404 that stops an EventSource.
func TestVanishedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.Heartbeat = 300 * time.Millisecond
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	for _, vanish := range []string{"DEL", "FLUSHALL"} {
		job := "vanish-" + strings.ToLower(vanish)
		ok(e.pub.Job(job).Register(ctx))
		s := streamtest.Open(t, []string{g.streamURL(job)}, "")
		s.WaitEvents(t, 1)
		start := time.Now()
		if vanish == "DEL" {
			e.redis.Do(t, "DEL", keys.State(job), keys.Events(job))
		} else {
			e.redis.Do(t, "FLUSHALL")
		}
		streamtest.Eventually(t, job+": stream ended", func() bool {
			return g.metric(t, "ssegate_connections_closed_total", "reason", "job_gone") >= 1 && g.metric(t, "ssegate_connections") == 0
		})
		if took := time.Since(start); took > 10*cfg.Heartbeat {
			t.Errorf("%s: noticed after %v, want about a heartbeat interval (%v)", vanish, took, cfg.Heartbeat)
		}
		s.Close()
		if status, _, _ := rawGet(t, g.streamURL(job), "Accept", "text/event-stream"); status != http.StatusNotFound {
			t.Errorf("%s: reconnect got %d, want 404", vanish, status)
		}
		e.redis.Do(t, "CONFIG", "RESETSTAT")
	}
}

// TestLiveMessageAheadOfTheStream: a live message whose ID is far ahead of
// anything the stream can hold (a made-up 99999999999999-0) moves no one's
// position: the job's real events after it, complete included, still reach
// its clients, and the mismatch is counted.
func TestLiveMessageAheadOfTheStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	const job = "fake-id"
	j := e.pub.Job(job)
	ok(j.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL(job)}, "")
	s.WaitEvents(t, 1)
	fake := protocol.ID{Ms: 99999999999999}
	data := `{"type":"status","jobId":"fake-id","status":"processing","timestamp":"2026-11-27T03:40:30.123Z"}`
	if err := e.rdb.Publish(ctx, keys.Live(job), protocol.EncodeLive(fake, event.TypeStatus, data)).Err(); err != nil {
		t.Fatal(err)
	}
	ok(j.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	ok(j.Complete(ctx, "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, s.Events(), e.history(job))
	if got := g.metric(t, "ssegate_live_mismatches_total", "kind", "ahead"); got != 1 {
		t.Errorf("ssegate_live_mismatches_total{kind=ahead} = %v, want 1", got)
	}
}

// TestLiveMessageSlightlyAhead: a made-up live ID only a little ahead of
// the clock (within the lead a real one may have) is forwarded at first,
// but the job's next check finds its position ahead of its stream: its
// clients are sent back through Last-Event-ID (a reset and the snapshot)
// and the real events after it reach them.
func TestLiveMessageSlightlyAhead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.Heartbeat = 300 * time.Millisecond
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	const job = "fake-near"
	j := e.pub.Job(job)
	ok(j.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL(job)}, "")
	s.WaitEvents(t, 1)
	fake := protocol.ID{Ms: uint64(time.Now().Add(20 * time.Second).UnixMilli())}
	data := `{"type":"status","jobId":"fake-near","status":"processing","timestamp":"2026-11-27T03:40:30.123Z"}`
	if err := e.rdb.Publish(ctx, keys.Live(job), protocol.EncodeLive(fake, event.TypeStatus, data)).Err(); err != nil {
		t.Fatal(err)
	}
	s.WaitEvents(t, 2)
	streamtest.Eventually(t, "mismatch noticed", func() bool {
		return g.metric(t, "ssegate_live_mismatches_total", "kind", "not_in_stream") >= 1
	})
	ok(j.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	ok(j.Complete(ctx, "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, m := range s.Events() {
		types = append(types, m.Event)
	}
	if got := strings.Join(types, ","); !strings.Contains(got, "reset") || !strings.HasSuffix(got, "complete") {
		t.Errorf("the client got %s, want a reset and the job through to complete", got)
	}
}
