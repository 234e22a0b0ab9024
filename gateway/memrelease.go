package gateway

import (
	"context"
	"runtime"
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
// read of four runtime metrics; when no collection ran for a whole interval
// and the heap grew by 16 MiB since it last judged, it collects first, to
// learn what is live. A release
// costs one collection, after a burst only, at most one per interval.

// releaseMin is the least free heap worth returning.
const releaseMin = 16 << 20

// worthReleasing reports whether free bytes of heap (free but not returned,
// or garbage) are worth returning now, with live bytes of live heap.
func worthReleasing(free, live uint64) bool {
	return free >= releaseMin && free > live+live/2
}

// heapSample is what the releaser reads of the runtime.
type heapSample struct {
	free    uint64 // free heap not returned to the OS
	objects uint64 // heap objects: live, and garbage not collected yet
	live    uint64 // live heap as of the last collection
	cycles  uint64 // collections so far
}

// garbage is the heap a collection would free, as far as the last one
// tells: while the gateway is idle it may not collect for two minutes, and
// the live figure of a collection made during a burst counts that burst's
// requests as live.
func (h heapSample) garbage() uint64 {
	if h.objects > h.live {
		return h.objects - h.live
	}
	return 0
}

func readHeap() heapSample {
	s := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	rtmetrics.Read(s)
	for i := range s {
		if s[i].Value.Kind() != rtmetrics.KindUint64 {
			return heapSample{}
		}
	}
	return heapSample{s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()}
}

// memReleaser runs the checks; read, collect and release are the
// runtime's (readHeap, runtime.GC, debug.FreeOSMemory) or fakes in tests.
type memReleaser struct {
	every    time.Duration
	read     func() heapSample
	collect  func()
	release  func()
	released func() // counts a release
}

func newMemReleaser(every time.Duration, m *metrics) *memReleaser {
	return &memReleaser{every: every, read: readHeap, collect: runtime.GC, release: debug.FreeOSMemory, released: m.memoryReleases.Inc}
}

// run checks every r.every until ctx ends.
func (r *memReleaser) run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	var last uint64   // collections at the last check
	var judged uint64 // the heap (free and objects) when last judged after a collection
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h := r.read()
			if h.cycles == last && h.free+h.objects >= judged+releaseMin {
				// No collection for a whole interval, and the heap grew
				// since the last judgement: learn what is live (an idle
				// process's collections are minutes apart, and one during
				// a burst counts its requests live). Once per growth: an
				// idle heap that is not worth releasing is not collected
				// again and again.
				r.collect()
				h = r.read()
				judged = h.free + h.objects
			}
			if worthReleasing(h.free+h.garbage(), h.live) {
				r.release()
				r.released()
				h = r.read()
				judged = h.free + h.objects
			}
			last = h.cycles
		}
	}
}
