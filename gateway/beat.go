package gateway

import (
	"container/heap"
	"sync"
	"time"
)

// A beatClock keeps the deadlines of many streams (their next heartbeat or
// their timeout) in a heap under one runtime timer, instead of a timer per
// stream: a runtime timer and its closure are about 200 B, a tenth of an
// idle stream's heap, and each is one more small object left in a span the
// connect burst's garbage shared (docs/benchmarks.md). It has no goroutine:
// the timer's function wakes the streams that are due, through a fanOut, so
// that the heartbeats of streams that were written together are written
// together, on one goroutine per chunk.
//
// Deadlines are exact: a stream is woken at the first firing at or after its
// deadline, as with a timer of its own.
//
// Concurrency: every method is safe for concurrent use. A stream's entry is
// set and removed only by the stream's drain (see stream), and popped only
// by fire, all under mu.
type beatClock struct {
	mu    sync.Mutex
	due   beatHeap
	base  time.Time   // deadlines are kept as durations since base (8 bytes a stream, not 24)
	timer *time.Timer // made at the first set, in the goroutine (and synctest bubble) of that stream
	at    time.Time   // when timer fires; zero when it is stopped
}

// set (re)schedules st to be woken at t.
func (bc *beatClock) set(st *stream, t time.Time) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.base.IsZero() {
		bc.base = time.Now()
	}
	st.beatAt = t.Sub(bc.base)
	if st.beatSlot >= 0 {
		heap.Fix(&bc.due, st.beatSlot)
	} else {
		heap.Push(&bc.due, st)
	}
	bc.armLocked()
}

// remove takes st off the clock, if it is on it.
func (bc *beatClock) remove(st *stream) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if st.beatSlot >= 0 {
		heap.Remove(&bc.due, st.beatSlot)
	}
	if len(bc.due) == 0 && bc.timer != nil {
		bc.timer.Stop()
		bc.at = time.Time{}
	}
	// Otherwise the timer may stay armed for a deadline that is gone:
	// fire then finds nothing due and arms for the next.
}

// armLocked makes the timer fire at the earliest deadline, if it is not set
// to fire by then already.
func (bc *beatClock) armLocked() {
	if len(bc.due) == 0 {
		return
	}
	next := bc.base.Add(bc.due[0].beatAt)
	if !bc.at.IsZero() && !bc.at.After(next) {
		return
	}
	bc.at = next
	d := time.Until(next)
	if bc.timer == nil {
		bc.timer = time.AfterFunc(d, bc.fire)
		return
	}
	bc.timer.Reset(d)
}

// fire wakes every stream that is due and arms the timer for the next.
func (bc *beatClock) fire() {
	var fo fanOut
	bc.mu.Lock()
	now := time.Since(bc.base)
	bc.at = time.Time{}
	var due []*stream
	for len(bc.due) > 0 && bc.due[0].beatAt <= now {
		due = append(due, heap.Pop(&bc.due).(*stream))
	}
	bc.armLocked()
	bc.mu.Unlock()
	fo.want = len(due)
	for _, st := range due {
		st.tick.Store(true)
		fo.wakeStream(st)
	}
	fo.run()
}

// beatHeap is a min-heap of streams by beatAt; each stream knows its slot.
type beatHeap []*stream

func (h beatHeap) Len() int           { return len(h) }
func (h beatHeap) Less(i, j int) bool { return h[i].beatAt < h[j].beatAt }
func (h beatHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].beatSlot, h[j].beatSlot = i, j
}

func (h *beatHeap) Push(x any) {
	st := x.(*stream)
	st.beatSlot = len(*h)
	*h = append(*h, st)
}

func (h *beatHeap) Pop() any {
	old := *h
	st := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	st.beatSlot = -1
	return st
}
