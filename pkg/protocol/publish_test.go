package protocol_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

var keys = protocol.NewKeys("")

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func register(t testing.TB, rdb redis.Scripter, job string) string {
	t.Helper()
	id, err := protocol.Publish(context.Background(), rdb, keys, job, protocol.PublishArgs{
		Op: protocol.OpRegister, Type: event.TypeStatus, Status: event.StatusPending,
		Data: mustJSON(t, event.NewStatus(job, event.StatusPending, time.Now())),
	})
	if err != nil {
		t.Fatalf("register %s: %v", job, err)
	}
	return id
}

func progress(t testing.TB, rdb redis.Scripter, job string, step, total int, a protocol.PublishArgs) (string, error) {
	t.Helper()
	a.Op, a.Type, a.Step, a.Total = protocol.OpPublish, event.TypeProgress, step, total
	a.Data = mustJSON(t, event.NewProgress(job, step, total, "step "+strconv.Itoa(step), time.Now()))
	return protocol.Publish(context.Background(), rdb, keys, job, a)
}

func forEachBackend(t *testing.T, f func(t *testing.T, srv *redistest.Server, rdb *redis.Client)) {
	for _, b := range redistest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			srv := b.Start(t)
			f(t, srv, srv.Client(t))
		})
	}
}

func TestPublishWritesStreamStateAndLiveTogether(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		job := "atomic-1"
		sub := rdb.Subscribe(ctx, keys.Live(job))
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil { // the subscribe confirmation
			t.Fatal(err)
		}
		live := sub.Channel()

		var ids []protocol.ID
		ids = append(ids, mustParse(t, register(t, rdb, job)))
		for step := 1; step <= 3; step++ {
			id, err := progress(t, rdb, job, step, 3, protocol.PublishArgs{})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, mustParse(t, id))
		}
		for i := 1; i < len(ids); i++ {
			if !ids[i-1].Less(ids[i]) {
				t.Fatalf("IDs not increasing: %v then %v", ids[i-1], ids[i])
			}
		}

		entries, err := rdb.XRange(ctx, keys.Events(job), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(ids) {
			t.Fatalf("stream has %d entries, want %d", len(entries), len(ids))
		}
		for i, e := range entries {
			if e.ID != ids[i].String() {
				t.Errorf("entry %d id %s, want %s", i, e.ID, ids[i])
			}
			select {
			case msg := <-live:
				lm, err := protocol.DecodeLive(msg.Payload)
				if err != nil {
					t.Fatal(err)
				}
				if lm.ID != ids[i] || string(lm.Type) != e.Values["type"] || lm.Data != e.Values["data"] {
					t.Errorf("live message %d = %+v, stream entry %+v", i, lm, e)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("live message %d not received", i)
			}
		}

		state, err := rdb.HGetAll(ctx, keys.State(job)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if state["status"] != "processing" || state["last_id"] != ids[len(ids)-1].String() ||
			state["progress"] != entries[len(entries)-1].Values["data"] || state["created_at"] == "" || state["updated_at"] == "" {
			t.Errorf("state = %v", state)
		}
	})
}

func mustParse(t testing.TB, s string) protocol.ID {
	t.Helper()
	id, err := protocol.ParseID(s)
	if err != nil {
		t.Fatalf("ParseID(%q): %v", s, err)
	}
	return id
}

// TestConcurrentPublishersStayConsistent publishes from several goroutines at
// once while a subscriber checks that every live message is already in the
// stream and no newer than the state's last_id: the three writes are one step.
func TestConcurrentPublishersStayConsistent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	const job, writers, each = "concurrent", 4, 50
	register(t, rdb, job)
	sub := rdb.Subscribe(ctx, keys.Live(job))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	live := sub.Channel()

	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := progress(t, rdb, job, i, each, protocol.PublishArgs{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var last protocol.ID
	for n := 0; n < writers*each; n++ {
		select {
		case msg := <-live:
			lm, err := protocol.DecodeLive(msg.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if !last.Less(lm.ID) {
				t.Fatalf("live IDs out of order: %v after %v", lm.ID, last)
			}
			last = lm.ID
			got, err := rdb.XRange(ctx, keys.Events(job), lm.ID.String(), lm.ID.String()).Result()
			if err != nil || len(got) != 1 || got[0].Values["data"] != lm.Data {
				t.Fatalf("live %v not in the stream: %v, %v", lm.ID, got, err)
			}
			lastID, err := rdb.HGet(ctx, keys.State(job), "last_id").Result()
			if err != nil || mustParse(t, lastID).Less(lm.ID) {
				t.Fatalf("state last_id %s older than live %v (%v)", lastID, lm.ID, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d live messages", n, writers*each)
		}
	}
	wg.Wait()
}

func TestPublishRefusals(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		if _, err := progress(t, rdb, "ghost", 1, 2, protocol.PublishArgs{}); !errors.Is(err, protocol.ErrJobNotFound) {
			t.Errorf("publish to an unregistered job: %v", err)
		}
		if n := rdb.Exists(ctx, keys.Events("ghost"), keys.State("ghost")).Val(); n != 0 {
			t.Errorf("a refused publish left %d keys", n)
		}

		register(t, rdb, "j")
		_, err := protocol.Publish(ctx, rdb, keys, "j", protocol.PublishArgs{
			Op: protocol.OpRegister, Type: event.TypeStatus, Status: event.StatusPending,
			Data: mustJSON(t, event.NewStatus("j", event.StatusPending, time.Now())),
		})
		if !errors.Is(err, protocol.ErrJobExists) {
			t.Errorf("second register: %v", err)
		}

		bad := []protocol.PublishArgs{
			{Op: protocol.OpPublish, Type: event.TypeStatus, Status: event.StatusCompleted, Data: `{}`},
			{Op: protocol.OpPublish, Type: event.TypeStatus, Status: "bogus", Data: `{}`},
			{Op: protocol.OpPublish, Type: "heartbeat", Data: `{}`},
			{Op: protocol.OpPublish, Type: event.TypeProgress, Step: 3, Total: 2, Data: `{}`},
			{Op: protocol.OpPublish, Type: event.TypeProgress, Step: 1, Total: 0, Data: `{}`},
			{Op: protocol.OpPublish, Type: event.TypeProgress, Step: -1, Total: 2, Data: `{}`},
			{Op: protocol.OpPublish, Type: event.TypeStatus, Status: event.StatusProcessing, Data: `not json`},
			{Op: "delete", Type: event.TypeStatus, Status: event.StatusProcessing, Data: `{}`},
		}
		before := rdb.XLen(ctx, keys.Events("j")).Val()
		for _, a := range bad {
			if _, err := protocol.Publish(ctx, rdb, keys, "j", a); !errors.Is(err, protocol.ErrBadArgs) {
				t.Errorf("%+v: err = %v, want ErrBadArgs", a, err)
			}
		}
		// Numbers that Lua's tonumber takes but XADD or PEXPIRE refuse must
		// be refused before anything is written.
		data := mustJSON(t, event.NewStatus("j", event.StatusProcessing, time.Now()))
		for i, argv := range [][]any{
			{"1", "publish", "status", data, "processing", "", 0, 0, "1.5", 60000, 60000, "PUBLISH"},
			{"1", "publish", "status", data, "processing", "", 0, 0, 100, "1e3", 60000, "PUBLISH"},
			{"1", "publish", "status", data, "processing", "", 0, 0, 100, 60000, "0x10", "PUBLISH"},
			{"1", "publish", "status", data, "processing", "", 0, 0, 100, 60000, 60000, "XADD"},
			{"2", "publish", "status", data, "processing", "", 0, 0, 100, 60000, 60000, "PUBLISH"},
		} {
			err := protocol.PublishScript.Run(ctx, rdb, []string{keys.Events("j"), keys.State("j"), keys.Live("j")}, argv...).Err()
			if err == nil || !strings.HasPrefix(err.Error(), "SSEGATE_") {
				t.Errorf("raw argv %d: err = %v, want a SSEGATE_ refusal", i, err)
			}
		}
		if ttl := rdb.PTTL(ctx, keys.State("j")).Val(); ttl <= 0 {
			t.Errorf("refusals left the state without expiry: %v", ttl)
		}
		if after := rdb.XLen(ctx, keys.Events("j")).Val(); after != before {
			t.Errorf("refused publishes changed the stream: %d -> %d entries", before, after)
		}

		done := mustJSON(t, event.NewCompleteRecord("j", "r-1", true, time.Now()))
		if _, err := protocol.Publish(ctx, rdb, keys, "j", protocol.PublishArgs{
			Op: protocol.OpPublish, Type: event.TypeComplete, Data: done, Report: `{"rows":[1,2]}`,
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := progress(t, rdb, "j", 1, 2, protocol.PublishArgs{}); !errors.Is(err, protocol.ErrJobFinished) {
			t.Errorf("publish after complete: %v", err)
		}
		state := rdb.HGetAll(ctx, keys.State("j")).Val()
		if state["status"] != "completed" || state["result"] != done || state["report"] != `{"rows":[1,2]}` {
			t.Errorf("state after complete = %v", state)
		}
		entries := rdb.XRange(ctx, keys.Events("j"), "-", "+").Val()
		for _, e := range entries {
			if e.Values["type"] == "complete" && e.Values["data"] != done {
				t.Errorf("stream complete entry carries %v; the report must stay in the state hash", e.Values["data"])
			}
		}
	})
}

func TestStreamIsTrimmed(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		const n, maxLen = 400, 20
		register(t, rdb, "long")
		for i := 0; i < n; i++ {
			if _, err := progress(t, rdb, "long", i%10, 10, protocol.PublishArgs{MaxLen: maxLen}); err != nil {
				t.Fatal(err)
			}
		}
		// MAXLEN ~ trims whole stream nodes (100 entries by default on
		// redis-server), so the length is bounded, not exact.
		got := rdb.XLen(context.Background(), keys.Events("long")).Val()
		if got < maxLen || got > maxLen+100 {
			t.Errorf("XLEN after %d publishes with MAXLEN ~ %d = %d", n+1, maxLen, got)
		}
	})
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		args := protocol.PublishArgs{StaleTTL: time.Hour, Retention: 300 * time.Millisecond}
		register(t, rdb, "exp")
		if _, err := progress(t, rdb, "exp", 1, 2, args); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{keys.Events("exp"), keys.State("exp")} {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
				t.Errorf("running job %s TTL = %v, want about 1h", k, ttl)
			}
		}
		args.Op, args.Type = protocol.OpPublish, event.TypeError
		args.Data = mustJSON(t, event.NewError("exp", "boom", "BOOM", false, time.Now()))
		if _, err := protocol.Publish(ctx, rdb, keys, "exp", args); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{keys.Events("exp"), keys.State("exp")} {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 300*time.Millisecond {
				t.Errorf("finished job %s TTL = %v, want retention", k, ttl)
			}
		}
		if m := srv.Mini(); m != nil {
			m.FastForward(time.Second)
		}
		deadline := time.Now().Add(5 * time.Second)
		for rdb.Exists(ctx, keys.Events("exp"), keys.State("exp")).Val() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("keys of a finished job did not expire")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestEstimateFromRedisClock(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		job := "eta"
		register(t, rdb, job)
		if _, err := protocol.Publish(ctx, rdb, keys, job, protocol.PublishArgs{
			Op: protocol.OpPublish, Type: event.TypeStatus, Status: event.StatusProcessing,
			Data: mustJSON(t, event.NewStatus(job, event.StatusProcessing, time.Now())),
		}); err != nil {
			t.Fatal(err)
		}
		estimate := func(step, total int) *int64 {
			t.Helper()
			id, err := progress(t, rdb, job, step, total, protocol.PublishArgs{})
			if err != nil {
				t.Fatal(err)
			}
			e := rdb.XRange(ctx, keys.Events(job), id, id).Val()
			var p event.ProgressEvent
			if err := json.Unmarshal([]byte(fmt.Sprint(e[0].Values["data"])), &p); err != nil {
				t.Fatal(err)
			}
			return p.EstimatedRemainingMs
		}
		if got := estimate(0, 4); got != nil {
			t.Errorf("estimate at step 0 = %d, want null", *got)
		}
		time.Sleep(200 * time.Millisecond)
		// 200 ms or more for one step: three steps left take 600 ms or more.
		if got := estimate(1, 4); got == nil || *got < 600 || *got > 60_000 {
			t.Errorf("estimate at step 1 of 4 = %v, want >= 600 ms", got)
		}
		if got := estimate(4, 4); got == nil || *got != 0 {
			t.Errorf("estimate at the last step = %v, want 0", got)
		}

		// Progress with no processing status counts from registration, and a
		// late processing status does not restart the clock mid-job.
		job = "eta-no-status"
		register(t, rdb, job)
		if _, err := progress(t, rdb, job, 1, 2, protocol.PublishArgs{}); err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.Publish(ctx, rdb, keys, job, protocol.PublishArgs{
			Op: protocol.OpPublish, Type: event.TypeStatus, Status: event.StatusProcessing,
			Data: mustJSON(t, event.NewStatus(job, event.StatusProcessing, time.Now())),
		}); err != nil {
			t.Fatal(err)
		}
		st := rdb.HGetAll(ctx, keys.State(job)).Val()
		if st["started_at"] == "" || st["started_at"] != st["created_at"] {
			t.Errorf("started_at = %q, created_at = %q; want equal", st["started_at"], st["created_at"])
		}
	})
}

func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	register(b, rdb, "bench")
	ctx := context.Background()
	data := mustJSON(b, event.NewProgress("bench", 1, 2, "Aggregating", time.Now()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.Publish(ctx, rdb, keys, "bench", protocol.PublishArgs{
			Op: protocol.OpPublish, Type: event.TypeProgress, Step: 1, Total: 2, Data: data,
		}); err != nil {
			b.Fatal(err)
		}
	}
}
