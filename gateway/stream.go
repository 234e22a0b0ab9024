package gateway

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
)

// A stream runs an open event stream after its start without a goroutine
// of its own at rest: thousands of streams are mostly idle, and a parked
// goroutine costs a stack. Whatever has work for it (a kick, the stream's
// deadline) calls wake, which starts a drain goroutine unless one is running;
// the drain writes all that is queued, flushes once, and exits. The hub's
// fan-out of an event claims the drains of the streams it queued to instead,
// and runs them in chunks (see fanOut). At most one drain runs at a time, so
// the writer and the sink are used by one goroutine at a time.
//
// One deadline on a beatClock, shared with the server's other streams,
// serves the heartbeat (sent when nothing was written for a heartbeat
// interval) and the timeout.
//
// Concurrency: wake is safe for concurrent use and never blocks; everything
// else belongs to the drain. A stream is built in the streamRunning state
// and start is its first drain, so nothing that start arms (the timer, the
// context hook, the client's notify) can run a drain before start has set
// every field. The clock's entry is set and removed by the drain.
type stream struct {
	w       *writer
	c       *client
	hbEvery time.Duration
	end     time.Time
	onEnd   func(reason string) // runs once, from the drain that ends the stream

	// now is the stream's sink when it can be written without waiting
	// (drainNow); nil otherwise.
	now *connSink

	state    atomic.Int32 // streamIdle, streamRunning, streamAgain or streamDone
	tick     atomic.Bool  // the deadline passed
	clock    *beatClock
	beatAt   time.Duration // the deadline on clock, since its base; guarded by clock.mu
	beatSlot int           // the index in clock's heap, -1 when off it; guarded by clock.mu
	stopCtx  func() bool
}

const (
	streamIdle    int32 = iota // no drain running
	streamRunning              // a drain is running
	streamAgain                // a drain is running and must look again before it exits
	streamDone                 // the stream ended
)

func newStream(w *writer, c *client, clock *beatClock, heartbeatEvery, timeout time.Duration, onEnd func(string)) *stream {
	return new(stream).init(w, c, clock, heartbeatEvery, timeout, onEnd)
}

// init sets up a zero stream in place (see streamMem) and returns it. A nil
// clock is a clock of the stream's own.
func (st *stream) init(w *writer, c *client, clock *beatClock, heartbeatEvery, timeout time.Duration, onEnd func(string)) *stream {
	if clock == nil {
		clock = new(beatClock)
	}
	st.w, st.c, st.hbEvery, st.end, st.onEnd = w, c, heartbeatEvery, time.Now().Add(timeout), onEnd
	st.clock, st.beatSlot = clock, -1
	if cs, ok := w.out.(*connSink); ok && cs.raw != nil {
		st.now = cs
	}
	st.state.Store(streamRunning) // start is the first drain
	return st
}

// start sets the stream's deadline, ties the stream to ctx (when ctx ends the stream
// ends as client_gone) and then, as the stream's first drain, writes what
// is queued already; it returns once that drain is done.
func (st *stream) start(ctx context.Context) {
	if st.w.wrote.IsZero() {
		st.w.wrote = time.Now()
	}
	st.stopCtx = func() bool { return false }
	if ctx.Done() != nil {
		st.stopCtx = context.AfterFunc(ctx, func() { st.c.kick(reasonClientGone, 0) })
	}
	st.clock.set(st, st.nextBeat())
	st.c.st.Store(st)
	// Whatever was queued or decided before st was set is found by
	// this first drain; whatever came after has marked it to look again.
	st.drain()
}

// nextBeat is when the stream must next be looked at: its next heartbeat,
// or its end.
func (st *stream) nextBeat() time.Time {
	if hb := st.w.wrote.Add(st.hbEvery); hb.Before(st.end) {
		return hb
	}
	return st.end
}

// wake makes sure a drain runs soon. It never blocks.
func (st *stream) wake() {
	if st.claim() {
		go st.drain()
	}
}

// claim makes sure a drain runs soon, and reports whether that is the
// caller's to run: true when no drain was running. It never blocks.
func (st *stream) claim() bool {
	for {
		switch st.state.Load() {
		case streamIdle:
			if st.state.CompareAndSwap(streamIdle, streamRunning) {
				return true
			}
		case streamRunning:
			if st.state.CompareAndSwap(streamRunning, streamAgain) {
				return false
			}
		default: // streamAgain, streamDone: nothing to add
			return false
		}
	}
}

func (st *stream) drain() {
	for {
		if reason, over := st.step(); over {
			st.state.Store(streamDone)
			st.finish(reason)
			return
		}
		if st.state.CompareAndSwap(streamRunning, streamIdle) {
			return
		}
		st.state.Store(streamRunning) // it was streamAgain: look again
	}
}

// drainNow is a drain claimed by a fan-out, run on the fan-out's goroutine
// among other streams' (see fanOut): its flushes write what the socket takes
// without waiting. A stream that is left holding bytes, or that ends
// (ending waits: the last chunk, the hub's lock), goes on in a goroutine
// of its own, so that one stalled client never holds up the others.
func (st *stream) drainNow(nb *nbWriter) {
	for {
		st.now.nb = nb
		reason, over := st.step()
		st.now.nb = nil
		if over || st.now.holding() {
			go st.drainOn(reason, over)
			return
		}
		if st.state.CompareAndSwap(streamRunning, streamIdle) {
			return
		}
		st.state.Store(streamRunning) // it was streamAgain: look again
	}
}

// drainOn goes on with a drain that drainNow began: it writes the bytes the
// socket did not take, waiting as any drain does, then ends the stream or
// drains on.
func (st *stream) drainOn(reason string, over bool) {
	if st.now.holding() {
		if err := st.now.Flush(); err != nil && !over {
			st.w.err = err
			reason, over = st.w.failed(st.c, err), true
		}
	}
	if over {
		st.state.Store(streamDone)
		st.finish(reason)
		return
	}
	st.drain()
}

// step does all the work there is without waiting: the end of the stream,
// its deadline, the queued frames. over reports that the stream has ended.
func (st *stream) step() (reason string, over bool) {
	w, c := st.w, st.c
	if c.gone.Load() {
		return w.kicked(c), true
	}
	if st.tick.Swap(false) {
		now := time.Now()
		if !now.Before(st.end) {
			return w.timedOut(), true
		}
		if !now.Before(w.wrote.Add(st.hbEvery)) {
			w.raw(heartbeat(now), event.TypeHeartbeat)
			if err := w.flush(); err != nil {
				return w.failed(c, err), true
			}
		}
		st.clock.set(st, st.nextBeat())
	}
	for {
		batch := c.take()
		if len(batch) == 0 {
			break
		}
		for _, f := range batch {
			terminal, err := w.frame(f, c.includeReport, !f.live)
			if err != nil {
				return w.failed(c, err), true
			}
			if terminal {
				if err := w.flush(); err != nil {
					return w.failed(c, err), true
				}
				return reasonFinished, true
			}
		}
		c.reuse(batch)
	}
	if err := w.flush(); err != nil {
		return w.failed(c, err), true
	}
	return "", false
}

func (st *stream) finish(reason string) {
	st.clock.remove(st)
	st.stopCtx()
	st.onEnd(reason)
}
