package publisher_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

var keys = protocol.NewKeys("")

func forEachBackend(t *testing.T, f func(t *testing.T, srv *redistest.Server, rdb *redis.Client)) {
	for _, b := range redistest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			srv := b.Start(t)
			f(t, srv, srv.Client(t))
		})
	}
}

func TestFullJob(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		clock := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		p := publisher.New(rdb, publisher.WithClock(func() time.Time { return clock }))
		job := p.Job("report-42")
		var ids []string
		must := func(id string, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		must(job.Register(ctx))
		must(job.Status(ctx, event.StatusProcessing))
		for s := 1; s <= 3; s++ {
			must(job.Progress(ctx, publisher.Step{Step: s, Total: 3, Name: "Step " + string(rune('0'+s))}))
		}
		must(job.Complete(ctx, "r-1", json.RawMessage(`{"total": 3}`)))

		entries, err := rdb.XRange(ctx, keys.Events("report-42"), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(ids) {
			t.Fatalf("%d entries, want %d", len(entries), len(ids))
		}
		wantTypes := []string{"status", "status", "progress", "progress", "progress", "complete"}
		for i, e := range entries {
			if e.ID != ids[i] || e.Values["type"] != wantTypes[i] {
				t.Errorf("entry %d = %s %v, want %s %s", i, e.ID, e.Values["type"], ids[i], wantTypes[i])
			}
		}
		if got := entries[0].Values["data"]; got != `{"type":"status","jobId":"report-42","status":"pending","timestamp":"2026-11-27T10:00:00.000Z"}` {
			t.Errorf("register data = %s", got)
		}
		var last event.ProgressEvent
		if err := json.Unmarshal([]byte(entries[4].Values["data"].(string)), &last); err != nil {
			t.Fatal(err)
		}
		if last.Step != 3 || last.TotalSteps != 3 || last.Percentage != 100 || last.CurrentStep != "Step 3" ||
			last.EstimatedRemainingMs == nil || *last.EstimatedRemainingMs != 0 {
			t.Errorf("last progress = %+v", last)
		}
		if got := entries[5].Values["data"]; got != `{"type":"complete","jobId":"report-42","reportId":"r-1","hasReport":true,"timestamp":"2026-11-27T10:00:00.000Z"}` {
			t.Errorf("complete data = %s", got)
		}
		state := rdb.HGetAll(ctx, keys.State("report-42")).Val()
		if state["status"] != "completed" || state["report"] != `{"total": 3}` || state["last_id"] != ids[len(ids)-1] {
			t.Errorf("state = %v", state)
		}

		if _, err := job.Progress(ctx, publisher.Step{Step: 1, Total: 3}); !errors.Is(err, publisher.ErrJobFinished) {
			t.Errorf("progress after complete: %v", err)
		}
		if _, err := job.Fail(ctx, "late", "LATE", false); !errors.Is(err, publisher.ErrJobFinished) {
			t.Errorf("fail after complete: %v", err)
		}
		if _, err := job.Register(ctx); !errors.Is(err, publisher.ErrJobExists) {
			t.Errorf("register of a finished job: %v", err)
		}
	})
}

func TestFail(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		job := publisher.New(rdb).Job("f-1")
		if _, err := job.Register(ctx); err != nil {
			t.Fatal(err)
		}
		id, err := job.Fail(ctx, "upstream timed out", "UPSTREAM_TIMEOUT", true)
		if err != nil {
			t.Fatal(err)
		}
		state := rdb.HGetAll(ctx, keys.State("f-1")).Val()
		var e event.ErrorEvent
		if err := json.Unmarshal([]byte(state["result"]), &e); err != nil {
			t.Fatal(err)
		}
		if state["status"] != "failed" || state["last_id"] != id || e.Code != "UPSTREAM_TIMEOUT" || !e.Retryable || e.Error != "upstream timed out" {
			t.Errorf("state = %v", state)
		}
		if _, err := job.Status(ctx, event.StatusProcessing); !errors.Is(err, publisher.ErrJobFinished) {
			t.Errorf("status after fail: %v", err)
		}
	})
}

func TestUnregisteredJob(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		_, err := publisher.New(rdb).Job("nobody").Status(context.Background(), event.StatusProcessing)
		if !errors.Is(err, publisher.ErrJobNotFound) {
			t.Fatalf("err = %v, want ErrJobNotFound", err)
		}
		if !strings.Contains(err.Error(), `"nobody"`) {
			t.Errorf("error %q does not name the job", err)
		}
	})
}

func TestOptions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		p := publisher.New(rdb, publisher.WithKeyPrefix("acme"), publisher.WithMaxLen(5),
			publisher.WithRetention(2*time.Minute), publisher.WithStaleTTL(3*time.Minute), publisher.WithReportMaxBytes(10))
		job := p.Job("o")
		if _, err := job.Register(ctx); err != nil {
			t.Fatal(err)
		}
		k := protocol.NewKeys("acme")
		if ttl := rdb.PTTL(ctx, k.State("o")).Val(); ttl <= 2*time.Minute || ttl > 3*time.Minute {
			t.Errorf("stale TTL = %v, want 3m", ttl)
		}
		if _, err := job.Complete(ctx, "r", json.RawMessage(`{"too":"large!"}`)); !errors.Is(err, publisher.ErrReportTooLarge) {
			t.Errorf("large report: %v", err)
		}
		if _, err := p.Job("n").Register(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Job("n").Complete(ctx, "r", json.RawMessage(` null `)); err != nil {
			t.Fatal(err)
		}
		if st := rdb.HGetAll(ctx, k.State("n")).Val(); st["report"] != "" || !strings.Contains(st["result"], `"hasReport":false`) {
			t.Errorf("a null report was stored: %v", st)
		}
		if _, err := job.Complete(ctx, "r", json.RawMessage(`[1]`)); err != nil {
			t.Fatal(err)
		}
		if ttl := rdb.PTTL(ctx, k.Events("o")).Val(); ttl <= time.Minute || ttl > 2*time.Minute {
			t.Errorf("retention = %v, want 2m", ttl)
		}
		if n := rdb.Exists(ctx, keys.State("o")).Val(); n != 0 {
			t.Error("the default prefix was written to")
		}
	})
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

func TestBadInputNeverReachesRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	hook := &countingHook{}
	rdb.AddHook(hook)
	ctx := context.Background()
	p := publisher.New(rdb, publisher.WithReportMaxBytes(64))
	good := p.Job("good")
	tests := []struct {
		name string
		call func() (string, error)
		want error
	}{
		{"empty job ID", func() (string, error) { return p.Job("").Register(ctx) }, publisher.ErrInvalidJobID},
		{"long job ID", func() (string, error) { return p.Job(strings.Repeat("a", 129)).Register(ctx) }, publisher.ErrInvalidJobID},
		{"slash in job ID", func() (string, error) { return p.Job("a/b").Register(ctx) }, publisher.ErrInvalidJobID},
		{"brace in job ID", func() (string, error) { return p.Job("{a}").Status(ctx, event.StatusPending) }, publisher.ErrInvalidJobID},
		{"unicode job ID", func() (string, error) { return p.Job("jöb").Fail(ctx, "m", "C", false) }, publisher.ErrInvalidJobID},
		{"unknown status", func() (string, error) { return good.Status(ctx, "done") }, publisher.ErrInvalidStatus},
		{"terminal status", func() (string, error) { return good.Status(ctx, event.StatusCompleted) }, publisher.ErrInvalidStatus},
		{"zero total", func() (string, error) { return good.Progress(ctx, publisher.Step{Step: 0, Total: 0}) }, publisher.ErrInvalidStep},
		{"negative step", func() (string, error) { return good.Progress(ctx, publisher.Step{Step: -1, Total: 3}) }, publisher.ErrInvalidStep},
		{"step past total", func() (string, error) { return good.Progress(ctx, publisher.Step{Step: 4, Total: 3}) }, publisher.ErrInvalidStep},
		{"invalid report", func() (string, error) { return good.Complete(ctx, "r", json.RawMessage(`{"a":`)) }, publisher.ErrInvalidReport},
		{"report too large", func() (string, error) {
			return good.Complete(ctx, "r", json.RawMessage(`"`+strings.Repeat("x", 100)+`"`))
		}, publisher.ErrReportTooLarge},
		{"empty report ID", func() (string, error) { return good.Complete(ctx, "", nil) }, publisher.ErrInvalidReportID},
		{"empty failure message", func() (string, error) { return good.Fail(ctx, "", "CODE", false) }, publisher.ErrInvalidFailure},
		{"empty failure code", func() (string, error) { return good.Fail(ctx, "msg", "", false) }, publisher.ErrInvalidFailure},
	}
	for _, tt := range tests {
		id, err := tt.call()
		if !errors.Is(err, tt.want) || id != "" {
			t.Errorf("%s: %q, %v; want %v", tt.name, id, err, tt.want)
		}
	}
	if n := hook.n.Load(); n != 0 {
		t.Errorf("%d commands reached Redis", n)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	_, err = publisher.New(rdb).Job("x").Register(context.Background())
	if err == nil || errors.Is(err, publisher.ErrJobExists) {
		t.Fatalf("err = %v, want a connection error", err)
	}
	if !strings.Contains(err.Error(), `register job "x"`) {
		t.Errorf("error %q is not wrapped with the operation", err)
	}
}

func BenchmarkProgress(b *testing.B) {
	srv := redistest.Start(b)
	job := publisher.New(srv.Client(b)).Job("bench")
	ctx := context.Background()
	if _, err := job.Register(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := job.Progress(ctx, publisher.Step{Step: 1, Total: 2, Name: "Aggregating"}); err != nil {
			b.Fatal(err)
		}
	}
}
