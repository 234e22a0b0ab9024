package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

// pipelineGate is a go-redis hook that counts the pipelines of start
// reads and holds each one until it is opened.
type pipelineGate struct {
	pipelines atomic.Int64
	open      chan struct{}
}

// gatedStore is a store on a real redis-server whose start-read pipelines
// wait for gate.
func gatedStore(t *testing.T, timeout time.Duration) (*store, *pipelineGate, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	gate := &pipelineGate{open: make(chan struct{})}
	rdb.AddHook(gate)
	return &store{rdb: rdb, keys: protocol.NewKeys(""), timeout: timeout}, gate, rdb
}

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}

func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || (cmds[0].Name() != "hmget" && cmds[0].Name() != "xrange") {
			return next(ctx, cmds) // a connection's handshake, the seeding
		}
		g.pipelines.Add(1)
		<-g.open
		return next(ctx, cmds)
	}
}

// The start reads of different jobs that wait at the same time, and their
// state and history reads, go to Redis together, a pipeline for up to maxStartBatch of
// them, and each gets its own job's answer: its state, and its history from
// its own resume point. Before they were batched, 200 jobs were 200
// pipelines.
func TestStoreStartReadsOfJobsGoTogether(t *testing.T) {
	t.Parallel()
	st, gate, rdb := gatedStore(t, 10*time.Second)
	keys := st.keys
	ctx := context.Background()

	const jobs = 200
	// Job i has i%5 events; each resumes after its first, if it has one.
	// Every seventh reads its state only, every eleventh (not seventh) its
	// history only, and job 199 does not exist.
	seed := rdb.Pipeline()
	for i := range jobs - 1 {
		job := fmt.Sprintf("job-%d", i)
		seed.HSet(ctx, keys.State(job), protocol.FieldStatus, "processing", protocol.FieldLastID, "1-0", protocol.FieldUpdatedAt, "1")
		for k := range i % 5 {
			seed.XAdd(ctx, &redis.XAddArgs{Stream: keys.Events(job), ID: fmt.Sprintf("%d-0", k+1), Values: []string{"type", "progress", "n", fmt.Sprint(k)}})
		}
	}
	if _, err := seed.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		res startRead
		err error
	}
	answers := make([]answer, jobs)
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			from := protocol.ID{}
			if i%5 > 0 {
				from, _ = protocol.ParseID("1-0")
			}
			job := fmt.Sprintf("job-%d", i)
			if i%7 == 0 {
				state, err := st.state(ctx, job)
				answers[i] = answer{startRead{st: state}, err}
				return
			}
			if i%11 == 0 {
				entries, found, err := st.after(ctx, job, from)
				answers[i] = answer{startRead{entries: entries, found: found}, err}
				return
			}
			res, err := st.start(ctx, job, i%5 > 0, from)
			answers[i] = answer{res, err}
		})
	}
	// The first reads are held in Redis's hands while the rest queue.
	time.Sleep(200 * time.Millisecond)
	close(gate.open)
	wg.Wait()

	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("job %d: %v", i, a.err)
		}
		if i == jobs-1 {
			if a.res.st != nil {
				t.Fatalf("job %d, which does not exist: state %+v", i, a.res.st)
			}
			continue
		}
		history := i%11 == 0 && i%7 != 0
		if history != (a.res.st == nil) || !history && a.res.st.status != "processing" {
			t.Fatalf("job %d: state %+v", i, a.res.st)
		}
		wantEntries := max(i%5-1, 0)
		if i%7 == 0 {
			wantEntries = 0 // a state read reads no history
		}
		// A history read from 0-0 is whole when nothing was trimmed: found.
		wantFound := i%5 > 0 && i%7 != 0 || history && i%5 == 0
		if len(a.res.entries) != wantEntries || a.res.found != wantFound || a.res.more {
			t.Fatalf("job %d: %d entries (found %v, more %v), want %d after its first", i, len(a.res.entries), a.res.found, a.res.more, wantEntries)
		}
		for k, e := range a.res.entries {
			if want := fmt.Sprintf("%d-0", k+2); e.ID != want {
				t.Fatalf("job %d: entry %d is %s, want %s", i, k, e.ID, want)
			}
		}
	}
	// The first reads go alone (one per flush), the others in pipelines of
	// 64: 2 + 4 here.
	if n, most := gate.pipelines.Load(), int64(6); n > most {
		t.Errorf("%d start reads took %d pipelines, want at most %d", jobs, n, most)
	}
	st.starts.mu.Lock()
	defer st.starts.mu.Unlock()
	if st.starts.flushes != 0 || len(st.starts.waiting) != 0 {
		t.Errorf("after the reads: %d flushes running, %d reads waiting", st.starts.flushes, len(st.starts.waiting))
	}
}

// A start read that fails fails alone: a Redis that is gone fails every
// read of the pipeline with its error, and a caller that gives up waiting
// gets its context's error while the others get their answers.
func TestStoreStartReadErrors(t *testing.T) {
	t.Parallel()
	t.Run("redis gone", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { rdb.Close() })
		st := &store{rdb: rdb, keys: protocol.NewKeys(""), timeout: 2 * time.Second}
		var wg sync.WaitGroup
		errs := make([]error, 10)
		for i := range errs {
			wg.Go(func() { _, errs[i] = st.start(context.Background(), fmt.Sprintf("job-%d", i), false, protocol.ID{}) })
		}
		wg.Wait()
		for i, err := range errs {
			var op *net.OpError
			if !errors.As(err, &op) {
				t.Errorf("read %d: %v, want the dial error", i, err)
			}
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		t.Parallel()
		st, gate, _ := gatedStore(t, 10*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := st.start(ctx, "leaver", false, protocol.ID{})
			errc <- err
		}()
		for gate.pipelines.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("the caller that gave up got %v, want context.Canceled", err)
		}
		close(gate.open) // its read completes, unread
		res, err := st.start(context.Background(), "stayer", false, protocol.ID{})
		if err != nil || res.st != nil {
			t.Errorf("a later read got %+v, %v; want no such job", res, err)
		}
	})
}

// A read that waits behind pipelines a hung Redis holds fails in the
// store's timeout, as it would alone, and is never sent.
func TestStoreStartReadWaitIsBounded(t *testing.T) {
	t.Parallel()
	st, gate, _ := gatedStore(t, time.Second)
	var wg sync.WaitGroup
	for i := range maxStartFlushes { // one in each flush, held in Redis's hands
		wg.Go(func() { _, _ = st.start(context.Background(), fmt.Sprintf("held-%d", i), false, protocol.ID{}) })
		for gate.pipelines.Load() < int64(i+1) {
			time.Sleep(time.Millisecond)
		}
	}
	behind := make(chan error, 1)
	go func() {
		_, err := st.start(context.Background(), "behind", false, protocol.ID{})
		behind <- err
	}()
	select {
	case err := <-behind:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the read behind them got %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the read behind them still waits after 5 s, with a timeout of %v", st.timeout)
		defer func() { <-behind }() // once the gate is open
	}
	close(gate.open)
	wg.Wait()
	for {
		st.starts.mu.Lock()
		flushes := st.starts.flushes
		st.starts.mu.Unlock()
		if flushes == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := gate.pipelines.Load(); n != maxStartFlushes {
		t.Errorf("%d pipelines sent, want %d: the read whose caller gave up was sent", n, maxStartFlushes)
	}
}
