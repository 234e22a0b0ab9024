package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// These tests run the hub on the in-memory broker and history, inside a
// synctest bubble: no Redis, fake time, and synctest.Wait to let every
// goroutine of the hub settle before looking.

type hubEnv struct {
	h    *Hub
	b    *memBroker
	hist *memHistory
}

// newTestHub runs a hub until the test ends. Call it inside the bubble.
func newTestHub(t *testing.T, cfg Config, manual bool) *hubEnv {
	t.Helper()
	hist := newMemHistory()
	h, b, _ := runTestHub(t, cfg, hist, manual)
	return &hubEnv{h: h, b: b, hist: hist}
}

// runTestHub runs a hub on hist and an in-memory broker until stop (which
// ends its context and waits for run to return) or the end of the test.
// Call it inside the bubble.
func runTestHub(t *testing.T, cfg Config, hist history, manual bool) (h *Hub, b *memBroker, stop func()) {
	t.Helper()
	h = newHub(cfg.withDefaults(), hist, &encoder{}, newMetrics(prometheus.NewRegistry()))
	b = newMemBroker(h.events())
	b.manual = manual
	h.broker = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(ctx)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	return h, b, stop
}

func progressData(job string, step int) string {
	return fmt.Sprintf(`{"type":"progress","jobId":%q,"step":%d,"totalSteps":100,"currentStep":"","percentage":%d,"estimatedRemainingMs":null,"timestamp":"2026-11-27T03:40:30.123Z"}`, job, step, step)
}

// queuedIDs takes what is queued for c and returns the event IDs, batch
// frames expanded, as milliseconds.
func queuedIDs(c *client) []uint64 {
	var ids []uint64
	for _, f := range c.take() {
		if len(f.ids) > 0 {
			for _, id := range f.ids {
				ids = append(ids, id.Ms)
			}
			continue
		}
		ids = append(ids, f.id.Ms)
	}
	return ids
}

// joined joins a client to job and reports it started at ms.
func (e *hubEnv) joined(t *testing.T, job string, ms uint64) (*jobSub, *client) {
	t.Helper()
	c := newClient(64, false)
	js, err := e.h.join(context.Background(), job, c)
	if err != nil {
		t.Fatalf("join %s: %v", job, err)
	}
	e.h.started(js, c, protocol.ID{Ms: ms})
	return js, c
}

func (e *hubEnv) add(job string, from, to uint64) {
	for ms := from; ms <= to; ms++ {
		e.hist.add(job, ms, event.TypeProgress, progressData(job, int(ms)))
	}
}

// TestHubRefillIsSingleFlight: when a subscription is lost again while the
// gap of the first loss is being refilled, the job's refill reads again
// before it lets live events through, instead of a second refill running
// beside it: the client gets every event once, in order.
func TestHubRefillIsSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		const job = "refill"
		e.add(job, 1, 3)
		js, c := e.joined(t, job, 3)

		e.b.fail() // first outage: 4 and 5 are published meanwhile
		synctest.Wait()
		e.add(job, 4, 5)
		e.hist.hold()
		e.b.confirmAll() // back: the refill starts, and waits on its read
		synctest.Wait()

		e.b.fail() // second outage during the refill: 6
		synctest.Wait()
		e.add(job, 6, 6)
		e.b.confirmAll()
		synctest.Wait()
		e.add(job, 7, 7) // live again: 7 arrives live and from the stream
		e.b.publish(job, protocol.ID{Ms: 7}, event.TypeProgress, progressData(job, 7))
		synctest.Wait()
		if got := queuedIDs(c); len(got) != 0 {
			t.Fatalf("events passed while the gap was open: %v", got)
		}

		e.hist.release()
		synctest.Wait()
		if got, want := queuedIDs(c), []uint64{4, 5, 6, 7}; !slices.Equal(got, want) {
			t.Errorf("client got %v, want %v", got, want)
		}
		if e.hist.maxIn != 1 {
			t.Errorf("%d refill reads of one job ran at once, want 1", e.hist.maxIn)
		}
		js.mu.Lock()
		refilling, pending := js.refilling, len(js.pending)
		js.mu.Unlock()
		if refilling || pending != 0 {
			t.Errorf("after the refill: refilling=%v, %d pending", refilling, pending)
		}
	})
}

// TestHubRefillBoundedWorkers: many jobs back at once are refilled by at
// most maxRefills workers.
func TestHubRefillBoundedWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		var clients []*client
		for i := range 3 * maxRefills {
			job := fmt.Sprintf("job-%d", i)
			e.add(job, 1, 1)
			_, c := e.joined(t, job, 1)
			clients = append(clients, c)
		}
		e.b.fail()
		synctest.Wait()
		for i := range clients {
			e.add(fmt.Sprintf("job-%d", i), 2, 2)
		}
		e.hist.hold()
		e.b.confirmAll()
		synctest.Wait()
		if e.hist.inFlight != maxRefills {
			t.Errorf("%d refill reads at once, want %d", e.hist.inFlight, maxRefills)
		}
		e.hist.release()
		synctest.Wait()
		for i, c := range clients {
			if got := queuedIDs(c); !slices.Equal(got, []uint64{2}) {
				t.Errorf("job-%d client got %v, want [2]", i, got)
			}
		}
	})
}

// TestHubRefillTrimmedHistory: when an outage outlasts a job's retained
// history, a client whose position is gone is sent back to resume through
// its Last-Event-ID (which answers with a reset and the snapshot); one
// whose position is still there gets the refill.
func TestHubRefillTrimmedHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		const job = "trim"
		e.add(job, 1, 5)
		_, lost := e.joined(t, job, 2)
		_, fine := e.joined(t, job, 5)
		e.b.fail()
		synctest.Wait()
		e.hist.mu.Lock()
		e.hist.entries[job] = nil // trimmed: only what comes next is kept
		e.hist.mu.Unlock()
		e.add(job, 5, 10)
		e.b.confirmAll()
		synctest.Wait()
		if !lost.gone.Load() {
			t.Error("the client whose position was trimmed was not sent back to resume")
		} else if lost.kickReason != reasonResync || lost.kickRetry <= 0 {
			t.Errorf("lost client kicked as %q with retry %v", lost.kickReason, lost.kickRetry)
		}
		if fine.gone.Load() {
			t.Errorf("the client whose position is retained was kicked (%s)", fine.kickReason)
		}
		// A batch frame carries what the client has too; its writer skips
		// that part.
		got := slices.DeleteFunc(queuedIDs(fine), func(ms uint64) bool { return ms <= 5 })
		if !slices.Equal(got, []uint64{6, 7, 8, 9, 10}) {
			t.Errorf("retained client got %v, want 6..10", got)
		}
	})
}

// TestHubLinger: the subscription outlives the last client by the linger,
// so a client that comes back within it costs no subscribe.
func TestHubLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{Linger: time.Second}, false)
		js, c := e.joined(t, "l", 0)
		for range 3 {
			e.h.leave(js, c)
			time.Sleep(900 * time.Millisecond)
			js, c = e.joined(t, "l", 0)
		}
		if sub, unsub := e.b.calls("l"); sub != 1 || unsub != 0 {
			t.Errorf("3 returns within the linger: %d subscribes, %d unsubscribes; want 1, 0", sub, unsub)
		}
		e.h.leave(js, c)
		time.Sleep(999 * time.Millisecond)
		if _, unsub := e.b.calls("l"); unsub != 0 {
			t.Error("unsubscribed before the linger ran out")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if _, unsub := e.b.calls("l"); unsub != 1 {
			t.Errorf("%d unsubscribes after the linger, want 1", unsub)
		}
		if e.h.watched("l") {
			t.Error("the job is still live after its subscription was dropped")
		}
	})
}

// TestHubNoLinger: a negative linger unsubscribes at once.
func TestHubNoLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{Linger: -1}, false)
		js, c := e.joined(t, "n", 0)
		e.h.leave(js, c)
		if _, unsub := e.b.calls("n"); unsub != 1 {
			t.Errorf("%d unsubscribes, want 1 at once", unsub)
		}
	})
}

// TestHubJoinWaitsForConfirmation: a join returns once the subscription is
// confirmed, and is refused as not ready after JoinTimeout without it.
func TestHubJoinWaitsForConfirmation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{JoinTimeout: 5 * time.Second}, true)
		start := time.Now()
		if _, err := e.h.join(context.Background(), "w", newClient(1, false)); !errors.Is(err, errNotReady) {
			t.Fatalf("join without a confirmation: %v, want errNotReady", err)
		}
		if took := time.Since(start); took != 5*time.Second {
			t.Errorf("refused after %v, want the join timeout", took)
		}
		done := make(chan error, 1)
		go func() {
			_, err := e.h.join(context.Background(), "w", newClient(1, false))
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("join returned before the confirmation: %v", err)
		default:
		}
		e.b.confirmAll()
		if err := <-done; err != nil {
			t.Fatalf("join after the confirmation: %v", err)
		}
	})
}

// TestHubDrain: a drain closes the streams in 10 waves over the grace,
// each with a jittered retry, and refuses new joins.
func TestHubDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{Retry: time.Second}, false)
		var clients []*client
		for i := range 20 {
			_, c := e.joined(t, fmt.Sprintf("d-%d", i%3), 0)
			clients = append(clients, c)
		}
		go e.h.drain(context.Background(), time.Second)
		kicked := func() int {
			n := 0
			for _, c := range clients {
				if c.gone.Load() {
					n++
					if c.kickReason != reasonShutdown || c.kickRetry < time.Second || c.kickRetry >= 2*time.Second {
						t.Errorf("kicked as %q with retry %v", c.kickReason, c.kickRetry)
					}
				}
			}
			return n
		}
		synctest.Wait()
		for wave := 1; wave <= 10; wave++ {
			if got := kicked(); got != 2*wave {
				t.Fatalf("after wave %d: %d of 20 kicked, want %d", wave, got, 2*wave)
			}
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		if _, err := e.h.join(context.Background(), "d-0", newClient(1, false)); !errors.Is(err, errDraining) {
			t.Errorf("join while draining: %v, want errDraining", err)
		}
	})
}

// TestHubDrainRefusesWaitingJoin: a client still waiting for its job's
// subscription when the drain begins is refused at once.
func TestHubDrainRefusesWaitingJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{JoinTimeout: time.Minute}, true)
		waiting := make(chan error, 1)
		go func() {
			_, err := e.h.join(context.Background(), "never-confirmed", newClient(1, false))
			waiting <- err
		}()
		synctest.Wait()
		start := time.Now()
		e.h.drain(context.Background(), time.Second)
		if err := <-waiting; !errors.Is(err, errDraining) {
			t.Errorf("join waiting when the drain began: %v, want errDraining", err)
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("refused after %v, want at once", took)
		}
	})
}

// TestHubLostWhileJoining: a client that joins while the subscription is
// lost waits for it to be back.
func TestHubLostWhileJoining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		e.joined(t, "x", 0)
		e.b.fail()
		synctest.Wait()
		if e.h.watched("x") {
			t.Fatal("live after the loss")
		}
		done := make(chan error, 1)
		go func() {
			_, err := e.h.join(context.Background(), "x", newClient(1, false))
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("join returned while the subscription was lost: %v", err)
		default:
		}
		e.b.confirmAll()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
