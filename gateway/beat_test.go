package gateway

import (
	"math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
)

// Streams that share a clock each get their own heartbeats and timeout, at
// their own times, as with a timer each; a stream that ends leaves the
// clock, and a clock with no streams left has no timer armed.
func TestBeatClockSharedByStreams(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var clock beatClock
		type run struct {
			start time.Time
			sink  *recordingSink
			w     *writer
			c     *client
			done  chan string
		}
		const n = 5
		runs := make([]*run, n)
		for i := range n {
			if i > 0 {
				time.Sleep(time.Second)
			}
			w, sink := newTestWriter(t)
			r := &run{start: time.Now(), sink: sink, w: w, c: newClient(4, false), done: make(chan string, 1)}
			// Heartbeats every 10 s; stream i ends at 25+i s.
			newStream(w, r.c, &clock, 10*time.Second, time.Duration(25+i)*time.Second,
				func(reason string) { r.done <- reason }).start(t.Context())
			runs[i] = r
		}
		synctest.Wait()
		if got := clockLen(&clock); got != n {
			t.Fatalf("clock holds %d deadlines, want %d (one per stream)", got, n)
		}

		// Stream 2 leaves at 12 s after its start, between its heartbeats.
		time.Sleep(time.Until(runs[2].start.Add(12 * time.Second)))
		runs[2].c.kick(reasonClientGone, 0)
		synctest.Wait()
		if got := clockLen(&clock); got != n-1 {
			t.Errorf("clock holds %d deadlines after a stream ended, want %d", got, n-1)
		}

		for i, r := range runs {
			reason := <-r.done
			got, _, _ := r.sink.snapshot()
			beats := 2 // at 10 and 20 s
			want := reasonTimeout
			if i == 2 {
				beats, want = 1, reasonClientGone
			}
			if reason != want {
				t.Errorf("stream %d ended as %q, want %q", i, reason, want)
			}
			var wantBytes strings.Builder
			for k := 1; k <= beats; k++ {
				wantBytes.Write(heartbeat(r.start.Add(time.Duration(k) * 10 * time.Second)))
			}
			if got != wantBytes.String() {
				t.Errorf("stream %d wrote %q, want %q", i, got, wantBytes.String())
			}
			if sent := sentCount(r.w.metrics, event.TypeHeartbeat); sent != float64(beats) {
				t.Errorf("stream %d counted %v heartbeats, want %d", i, sent, beats)
			}
		}
		clock.mu.Lock()
		defer clock.mu.Unlock()
		if len(clock.due) != 0 || !clock.at.IsZero() {
			t.Errorf("clock holds %d deadlines, armed for %v, after every stream ended", len(clock.due), clock.at)
		}
	})
}

// Streams due at once all get their heartbeat at that time, more of them
// than one fan-out chunk holds.
func TestBeatClockWakesEveryDueStream(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var clock beatClock
		const n = 300 // more than one fan-out chunk
		sinks := make([]*recordingSink, n)
		clients := make([]*client, n)
		dones := make([]chan string, n)
		for i := range n {
			w, sink := newTestWriter(t)
			sinks[i], clients[i], dones[i] = sink, newClient(4, false), make(chan string, 1)
			done := dones[i]
			newStream(w, clients[i], &clock, 10*time.Second, time.Hour,
				func(reason string) { done <- reason }).start(t.Context())
		}
		start := time.Now()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		for i, sink := range sinks {
			if got, _, _ := sink.snapshot(); got != string(heartbeat(start.Add(10*time.Second))) {
				t.Fatalf("stream %d wrote %q at 10 s, want one heartbeat", i, got)
			}
		}
		for i, c := range clients {
			c.kick(reasonClientGone, 0)
			if reason := <-dones[i]; reason != reasonClientGone {
				t.Errorf("stream %d ended as %q", i, reason)
			}
		}
		if got := clockLen(&clock); got != 0 {
			t.Errorf("clock holds %d deadlines after every stream ended", got)
		}
	})
}

// The heap stays a heap, and each stream knows its slot, through any mix
// of new deadlines, moved deadlines and removals.
func TestBeatClockHeap(t *testing.T) {
	t.Parallel()
	var clock beatClock
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(time.Hour) // never due while the test runs
	streams := make([]*stream, 200)
	for i := range streams {
		streams[i] = &stream{beatSlot: -1}
	}
	on := map[*stream]bool{}
	for range 5000 {
		st := streams[rng.IntN(len(streams))]
		if rng.IntN(3) == 0 {
			clock.remove(st)
			delete(on, st)
		} else {
			clock.set(st, base.Add(time.Duration(rng.IntN(1000))*time.Millisecond))
			on[st] = true
		}
		clock.mu.Lock()
		h := clock.due
		if len(h) != len(on) {
			t.Fatalf("heap holds %d streams, want %d", len(h), len(on))
		}
		for i, st := range h {
			if st.beatSlot != i || !on[st] {
				t.Fatalf("slot %d holds a stream that says %d (on the clock: %v)", i, st.beatSlot, on[st])
			}
			if i > 0 && st.beatAt < h[(i-1)/2].beatAt {
				t.Fatalf("slot %d is due before its parent", i)
			}
		}
		if next := clock.base.Add(h[0].beatAt); len(h) > 0 && (clock.at.IsZero() || clock.at.After(next)) {
			t.Fatalf("timer armed for %v, after the earliest deadline %v", clock.at, next)
		}
		clock.mu.Unlock()
	}
	for _, st := range streams {
		clock.remove(st)
	}
	if !clock.at.IsZero() {
		t.Errorf("timer still armed for %v with no deadlines", clock.at)
	}
}

func clockLen(bc *beatClock) int {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return len(bc.due)
}
