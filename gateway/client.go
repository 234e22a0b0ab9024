package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// A client is one open stream as the hub sees it: a bounded queue of
// frames that the hub fills and the stream's writer empties, and the kick
// that ends the stream.
//
// Concurrency: push, offer, take, reuse and kick are safe for concurrent use (the
// hub pushes and kicks, the stream's drain takes). The position fields are
// guarded by the mutex of the client's jobSub. kickReason and kickRetry are
// written once, before gone is set, and read only after it is.
//
// The fields are ordered so that the small ones share words: a client is
// part of every stream's block (streamMem).
type client struct {
	limit int // most frames queued before the client is cut as slow

	qmu   sync.Mutex // guards queue
	queue []*frame   // frames to write, oldest first; keeps its capacity between drains

	kickOnce      sync.Once
	gone          atomic.Bool // set when the hub ends the stream: it is sent nothing more
	includeReport bool
	known         bool // the handler has reported where the stream stands; guarded by the jobSub's mu

	kickReason string        // set before gone
	kickRetry  time.Duration // retry hint to send on the way out; 0 for none
	// st, once set, is the stream that writes the queue: it is woken after
	// a frame is queued or the client is kicked (see stream).
	st atomic.Pointer[stream]

	// Guarded by the jobSub's mu.
	idx    int         // in jobSub.clients
	seq    uint64      // its place among the job's joins (jobSub.seq)
	base   protocol.ID // where the snapshot or replay left the stream
	queued protocol.ID // newest frame put in the queue
}

func newClient(buffer int, includeReport bool) *client {
	c := new(client)
	c.init(buffer, includeReport)
	return c
}

// init sets up a zero client in place (see streamMem).
func (c *client) init(buffer int, includeReport bool) {
	c.limit, c.includeReport = buffer, includeReport
}

// push queues f and wakes the stream. It never blocks; it reports false,
// queueing nothing, when the queue is full.
func (c *client) push(f *frame) bool {
	if !c.offer(f) {
		return false
	}
	if st := c.st.Load(); st != nil {
		st.wake()
	}
	return true
}

// offer queues f without waking the stream (the caller does, see fanOut).
// It never blocks; it reports false, queueing nothing, when the queue is
// full.
func (c *client) offer(f *frame) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if len(c.queue) >= c.limit {
		return false
	}
	c.queue = append(c.queue, f)
	return true
}

// take returns the queued frames, oldest first, and empties the queue.
// Give the slice back with reuse once done with it.
func (c *client) take() []*frame {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	q := c.queue
	c.queue = nil
	return q
}

// reuse hands a slice from take back, so that the next frames need no new
// allocation.
func (c *client) reuse(q []*frame) {
	clear(q)
	c.qmu.Lock()
	if c.queue == nil {
		c.queue = q[:0]
	}
	c.qmu.Unlock()
}

// kick ends the client's stream. The first reason wins; it reports whether
// this call was the first.
func (c *client) kick(reason string, retry time.Duration) bool {
	first := false
	c.kickOnce.Do(func() {
		c.kickReason, c.kickRetry = reason, retry
		c.gone.Store(true)
		first = true
	})
	if st := c.st.Load(); first && st != nil {
		st.wake()
	}
	return first
}

// pos is the newest event the client has or has queued. Guarded by the
// jobSub's mu.
func (c *client) pos() protocol.ID {
	if c.queued.Less(c.base) {
		return c.base
	}
	return c.queued
}
