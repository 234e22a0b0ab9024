package gateway

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// A burst of connects (a reconnect storm, a deploy) leaves the heap with
// several times the memory its streams keep: the requests' buffers and
// goroutine stacks are garbage once the streams are taken over, and an idle
// gateway allocates too little to make Go collect and return them soon (its
// background scavenger returns memory slowly, and only down to about twice
// the live heap). Measured: 10,000 idle streams held 13.5 KiB of RSS each
// 100 s after connecting, with 3.1 KiB live (docs/benchmarks.md).
//
// A memReleaser checks every interval and, when the heap that is free or
// garbage is both large and well over the live heap (which the steady
// state of GOGC's goal does not reach: between collections the heap grows
// to about twice the live heap, and the scavenger keeps about a tenth more),
// collects and returns it at once (debug.FreeOSMemory). A check costs a
// read of three runtime metrics; a release costs one collection, after a
// burst only, and at most one per interval.

// releaseMin is the least free heap worth returning.
const releaseMin = 16 << 20

// worthReleasing reports whether free bytes of heap (free but not returned,
// or garbage) are worth returning now, with live bytes of live heap.
func worthReleasing(free, live uint64) bool {
	return free >= releaseMin && free > live+live/2
}

// heapFree reads the heap that a collection and a release would return:
// free heap not returned to the OS, and garbage not collected yet (an idle
// process may not collect for two minutes); and the live heap as of the
// last collection.
func heapFree() (free, live uint64) {
	s := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	rtmetrics.Read(s)
	for i := range s {
		if s[i].Value.Kind() != rtmetrics.KindUint64 {
			return 0, 0
		}
	}
	free, objects, live := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	if objects > live {
		free += objects - live
	}
	return free, live
}

// memReleaser runs the checks; read and release are the
// runtime's (heapFree, debug.FreeOSMemory) or fakes in tests.
type memReleaser struct {
	every    time.Duration
	read     func() (free, live uint64)
	release  func()
	released func() // counts a release
}

func newMemReleaser(every time.Duration, m *metrics) *memReleaser {
	return &memReleaser{every: every, read: heapFree, release: debug.FreeOSMemory, released: m.memoryReleases.Inc}
}

// run checks every r.every until ctx ends.
func (r *memReleaser) run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if free, live := r.read(); worthReleasing(free, live) {
				r.release()
				r.released()
			}
		}
	}
}
