package gateway

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestWorthReleasing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		free, live uint64
		want       bool
	}{
		{0, 0, false},
		{releaseMin - 1, 0, false},    // too little to bother
		{releaseMin, 0, true},         // a burst's garbage, nothing live
		{90 << 20, 31 << 20, true},    // 10,000 idle streams 100 s after their connects
		{40 << 20, 31 << 20, false},   // within GOGC's steady state
		{48 << 20, 32 << 20, false},   // exactly 1.5 × live: not over it
		{49 << 20, 32 << 20, true},    //
		{600 << 20, 500 << 20, false}, // a large live heap with its usual headroom
	} {
		if got := worthReleasing(c.free, c.live); got != c.want {
			t.Errorf("worthReleasing(%d MiB free, %d MiB live) = %v, want %v", c.free>>20, c.live>>20, got, c.want)
		}
	}
}

// The releaser checks once per interval, releases only when it is worth
// it, collects first when an idle heap holds much garbage it cannot judge,
// counts each release, and stops with its context.
func TestMemReleaserChecksEachInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		h := heapSample{live: 10 << 20, objects: 10 << 20, cycles: 1}
		checks, collects, releases, counted := 0, 0, 0, 0
		r := &memReleaser{
			every: 10 * time.Second,
			read: func() heapSample {
				mu.Lock()
				defer mu.Unlock()
				checks++
				return h
			},
			collect: func() {
				mu.Lock()
				defer mu.Unlock()
				collects++
				h.objects, h.cycles = h.live, h.cycles+1
			},
			release: func() {
				mu.Lock()
				defer mu.Unlock()
				releases++
				h.free, h.objects, h.cycles = 0, h.live, h.cycles+1 // what FreeOSMemory does
			},
			released: func() { counted++ },
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() { r.run(ctx); close(done) }()
		step := func(d time.Duration, change func()) {
			t.Helper()
			mu.Lock()
			if change != nil {
				change()
			}
			mu.Unlock()
			time.Sleep(d)
			synctest.Wait()
		}
		expect := func(what string, wantCollects, wantReleases int) {
			t.Helper()
			mu.Lock()
			defer mu.Unlock()
			if collects != wantCollects || releases != wantReleases || counted != releases {
				t.Fatalf("%s: %d collections, %d releases (%d counted); want %d, %d", what, collects, releases, counted, wantCollects, wantReleases)
			}
		}

		step(25*time.Second, nil)
		expect("idle, nothing free", 0, 0)

		// A burst collected during it: its garbage is free heap.
		step(10*time.Second, func() { h.free, h.cycles = 100<<20, h.cycles+1 })
		expect("free heap after a burst", 0, 1)
		step(30*time.Second, nil)
		expect("nothing free since", 0, 1)

		// A burst whose garbage is not collected, and a live figure from a
		// collection during it (its requests counted live): not worth it
		// by those figures. The check after it sees a collection (the
		// burst's), the next none: it collects, then judges.
		liveAfter := uint64(25 << 20) // what a collection now finds live
		step(10*time.Second, func() { h.live, h.objects, h.cycles = 150<<20, 232<<20, h.cycles+1 })
		expect("the check right after the burst's collection", 0, 1)
		step(10*time.Second, func() {
			collectAs := r.collect
			r.collect = func() {
				mu.Lock()
				h.free += h.objects - liveAfter
				h.live = liveAfter
				mu.Unlock()
				collectAs()
			}
		})
		expect("no collection for an interval, much garbage", 1, 2)

		// Under load the runtime collects by itself: no extra collections.
		for range 5 {
			step(10*time.Second, func() { h.objects, h.cycles = h.live*2, h.cycles+3 })
		}
		expect("under load", 1, 2)

		// Idle again, with free heap the scavenger keeps that is not worth
		// releasing: collected once to judge it, then left alone.
		step(10*time.Second, func() { h.objects, h.free = h.live, 30<<20 })
		for range 5 {
			step(10*time.Second, nil)
		}
		expect("idle, 30 MiB free, 25 MiB live", 2, 2)

		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("run did not return when its context ended")
		}
	})
}

// readHeap reads the runtime: garbage made and collected shows as free
// heap, and FreeOSMemory returns it.
func TestReadHeapReadsTheRuntime(t *testing.T) {
	// Not parallel: it measures the process's heap.
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.KeepAlive(keep)
	keep = nil
	before := readHeap()
	runtime.GC()
	h := readHeap()
	if h.free < 32<<20 {
		t.Fatalf("after 64 MiB of garbage was collected, readHeap reports %d MiB free (live %d MiB)", h.free>>20, h.live>>20)
	}
	if h.live == 0 || h.cycles <= before.cycles {
		t.Fatalf("readHeap after a collection: live %d, cycles %d (before %d)", h.live, h.cycles, before.cycles)
	}
	newMemReleaser(time.Hour, newMetrics(prometheus.NewRegistry())).release()
	if after := readHeap(); after.free >= h.free/2 {
		t.Fatalf("FreeOSMemory left %d of %d MiB free", after.free>>20, h.free>>20)
	}
}

// A burst whose garbage a collection during it already freed, with that
// collection's live figure counting the burst's requests: by the figures,
// little is garbage and the free heap is under 1.5 × live. The releaser
// must still collect to learn what is live, and release. (Measured: 19,000
// idle streams kept 4.8 KiB of RSS each when it did not.)
func TestMemReleaserStaleLiveFigure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		h := heapSample{free: 117 << 20, objects: 105 << 20, live: 100 << 20, cycles: 7}
		collects, releases := 0, 0
		r := &memReleaser{
			every: 10 * time.Second,
			read: func() heapSample {
				mu.Lock()
				defer mu.Unlock()
				return h
			},
			collect: func() {
				mu.Lock()
				defer mu.Unlock()
				collects++
				const live = 45 << 20 // the streams alone
				h.free, h.objects, h.live, h.cycles = h.free+h.objects-live, live, live, h.cycles+1
			},
			release: func() {
				mu.Lock()
				defer mu.Unlock()
				releases++
				h.free, h.cycles = 0, h.cycles+1
			},
			released: func() {},
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go r.run(ctx)
		time.Sleep(35 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if collects != 1 || releases != 1 {
			t.Fatalf("stale live figure, 117 MiB free: %d collections, %d releases in 3 checks; want 1, 1", collects, releases)
		}
	})
}
