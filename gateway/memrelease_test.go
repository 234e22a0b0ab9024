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
// it, counts each release, and stops with its context.
func TestMemReleaserChecksEachInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		free, live := uint64(0), uint64(10<<20)
		checks, releases, counted := 0, 0, 0
		r := &memReleaser{
			every: 10 * time.Second,
			read: func() (uint64, uint64) {
				mu.Lock()
				defer mu.Unlock()
				checks++
				return free, live
			},
			release: func() {
				mu.Lock()
				defer mu.Unlock()
				releases++
				free = 0 // what FreeOSMemory does
			},
			released: func() { counted++ },
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.run(ctx); close(done) }()

		time.Sleep(25 * time.Second)
		synctest.Wait()
		mu.Lock()
		if checks != 2 || releases != 0 {
			t.Fatalf("after 25 s with nothing free: %d checks, %d releases; want 2, 0", checks, releases)
		}
		free = 100 << 20 // a connect burst's garbage
		mu.Unlock()

		time.Sleep(10 * time.Second)
		synctest.Wait()
		mu.Lock()
		if checks != 3 || releases != 1 || counted != 1 {
			t.Fatalf("after a burst: %d checks, %d releases (%d counted); want 3, 1, 1", checks, releases, counted)
		}
		mu.Unlock()

		time.Sleep(30 * time.Second) // nothing free since: no more releases
		synctest.Wait()
		mu.Lock()
		if releases != 1 {
			t.Fatalf("%d releases with nothing free since the first", releases)
		}
		mu.Unlock()

		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("run did not return when its context ended")
		}
	})
}

// heapFree reads the runtime: garbage made and collected shows as free
// heap, and FreeOSMemory returns it.
func TestHeapFreeReadsTheRuntime(t *testing.T) {
	// Not parallel: it measures the process's heap.
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	runtime.KeepAlive(keep)
	keep = nil
	runtime.GC()
	free, live := heapFree()
	if free < 32<<20 {
		t.Fatalf("after 64 MiB of garbage was collected, heapFree reports %d MiB free (live %d MiB)", free>>20, live>>20)
	}
	if live == 0 {
		t.Fatal("heapFree reports no live heap")
	}
	newMemReleaser(time.Hour, newMetrics(prometheus.NewRegistry())).release()
	if after, _ := heapFree(); after >= free/2 {
		t.Fatalf("FreeOSMemory left %d of %d MiB free", after>>20, free>>20)
	}
}
