package gateway

import (
	"context"
	"slices"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// A read is shared until no stream has started from it for shareFor, and
// for maxShare at most. A pod that dies sends its clients to the others
// within seconds; one read per job is what that storm costs Redis.
const (
	shareFor = time.Second
	maxShare = 5 * time.Second
)

// maxTail bounds the live frames a shared read keeps for the streams that
// use it after it was made; past it the read is sealed (see sharedRead).
const maxTail = replayPage

// A sharedRead is one read of a job's state and history that the streams
// starting on the job share: the first to start makes it, those that start
// within shareFor use it, each from its own Last-Event-ID.
//
// The gap-free join rule holds for every one of them. A client is joined
// (its queue gets every live frame from then on) before it starts, and a
// stream's start is the read plus every frame fanned out since the read
// was sent (its tail): a client that joined after the read sees the events
// between the two in the tail. The tail is only whole while the job's
// subscription stays up and no refill holds live frames back, so the read
// is sealed when it is lost, refilled, or its tail fills up: it stops
// growing, and only the clients that joined before then may use it.
type sharedRead struct {
	resume bool        // it read the history from
	from   protocol.ID // its history starts after this
	done   chan struct{}

	// Set before done is closed; read-only after.
	res     startRead
	history []historyEntry // res.entries as frames
	ids     []protocol.ID  // their IDs, for locating a resume point
	err     error

	// Guarded by the jobSub's mu.
	used     time.Time // when a stream last started from it
	sealed   bool
	sealedAt uint64   // jobSub.seq when it was sealed: later joins may not use it
	tail     []*frame // frames fanned out since the read was sent
	finished bool     // the tail holds the job's terminal event
}

// A start is how a stream of a running job begins, from a read of the job:
// its state (nil: no such job) and, for a resume, the events after its
// Last-Event-ID (found: that ID is in the stream; more: there are more than
// history holds). finished reports that the job ended since the read: the
// stream should be answered as a finished job's.
type start struct {
	st       *jobState
	history  []historyEntry
	found    bool
	more     bool
	finished bool
}

// start reads how c's stream begins, sharing the read with the job's other
// streams that start at about the same time (see sharedRead). c has joined
// js; the read is made after that, so that nothing falls between it and c's
// live frames.
func (h *Hub) start(ctx context.Context, js *jobSub, c *client, resume bool, from protocol.ID) (start, error) {
	js.mu.Lock()
	r := js.read
	own := r == nil || !r.covers(resume, from)
	if own {
		js.sealLocked() // replaced: its tail need not grow
		r = &sharedRead{resume: resume, from: from, done: make(chan struct{})}
		js.read = r
		if js.gap || js.refilling {
			r.sealed, r.sealedAt = true, js.seq
		}
	}
	js.mu.Unlock()

	if own {
		h.metrics.startReads.WithLabelValues("issued").Inc()
		h.issue(js, r)
	} else {
		select {
		case <-r.done:
		case <-ctx.Done():
			return start{}, ctx.Err()
		}
	}
	if r.err != nil {
		return start{}, r.err
	}
	js.mu.Lock()
	s, ok := r.serve(c, resume, from)
	r.used = time.Now()
	js.mu.Unlock()
	if ok {
		if !own {
			h.metrics.startReads.WithLabelValues("shared").Inc()
		}
		return s, nil
	}
	// Its resume point is past what the shared read holds: a read of its
	// own.
	h.metrics.startReads.WithLabelValues("issued").Inc()
	res, err := h.hist.start(ctx, js.job, resume, from)
	if err != nil {
		return start{}, err
	}
	return start{st: res.st, history: h.enc.history(js.job, res.entries), found: res.found, more: res.more}, nil
}

// issue makes r's read and keeps r for the streams that start within
// shareFor. The read is bounded by the store's timeout, not by the
// context of the stream that makes it: the others wait for it too.
func (h *Hub) issue(js *jobSub, r *sharedRead) {
	r.res, r.err = h.hist.start(h.ctx, js.job, r.resume, r.from)
	if r.err == nil {
		r.history = h.enc.history(js.job, r.res.entries)
		r.ids = make([]protocol.ID, len(r.res.entries))
		for i, e := range r.res.entries {
			r.ids[i], _ = protocol.ParseID(e.ID)
		}
	}
	close(r.done)
	if r.err != nil {
		js.mu.Lock()
		js.dropReadLocked(r)
		js.mu.Unlock()
		return
	}
	issued := time.Now()
	var expire func()
	expire = func() {
		js.mu.Lock()
		defer js.mu.Unlock()
		now := time.Now()
		next := r.used.Add(shareFor)
		if end := issued.Add(maxShare); end.Before(next) {
			next = end
		}
		if !r.sealed && now.Before(next) {
			time.AfterFunc(next.Sub(now), expire)
			return
		}
		js.dropReadLocked(r)
	}
	time.AfterFunc(shareFor, expire)
}

// covers reports whether a stream that starts now may use r: r is still
// growing its tail, and read from no later than the stream's resume point.
func (r *sharedRead) covers(resume bool, from protocol.ID) bool {
	return !r.sealed && (!resume || (r.resume && !from.Less(r.from)))
}

// serve returns c's start from r: the state, and the events after from out
// of r's history and then its tail. It reports false when r cannot tell:
// from is past the page r read. The jobSub's mu is held.
func (r *sharedRead) serve(c *client, resume bool, from protocol.ID) (start, bool) {
	if r.sealed && c.seq > r.sealedAt {
		// A guard: covers keeps a client from taking a read sealed
		// before it joined (its own read, sealed at issue, is sealed
		// after its join).
		return start{}, false
	}
	s := start{st: r.res.st, finished: r.finished}
	if s.st == nil || s.st.status.Terminal() {
		return s, true // the handler answers it from the state
	}
	if !resume {
		s.history = r.tailAfter(s.st.lastID) // the snapshot, then what followed it
		return s, true
	}
	i, inPage := slices.BinarySearchFunc(r.ids, from, compareID)
	switch {
	case from == r.from:
		s.history, s.found, s.more = r.history, r.res.found, r.res.more
	case inPage:
		s.history, s.found, s.more = r.history[i+1:], true, r.res.more
	case r.res.more:
		return start{}, false // past the page read
	case r.newest().Less(from):
		// Past everything r holds: added since, and its live frame not
		// here yet (the client saw it elsewhere first). r cannot tell.
		return start{}, false
	default:
		// Past every entry read, not past the tail: in the tail, or not
		// in the stream (the page and the tail hold every entry up to
		// the tail's newest).
		if j, ok := slices.BinarySearchFunc(r.tail, from, compareFrame); ok {
			s.history, s.found = tailEntries(r.tail[j+1:]), true
		} else {
			s.history = r.tailAfter(s.st.lastID)
		}
		return s, true
	}
	switch {
	case !s.found:
		s.history = r.tailAfter(s.st.lastID) // a reset, the snapshot, what followed it
	case s.more:
		// The replay reads on from the stream, which holds the tail too.
	default:
		after := from
		if n := len(r.ids); n > 0 && after.Less(r.ids[n-1]) {
			after = r.ids[n-1]
		}
		s.history = append(slices.Clip(s.history), r.tailAfter(after)...)
	}
	return s, true
}

// newest is the newest event r knows of: in its page, its tail or the
// state it read.
func (r *sharedRead) newest() protocol.ID {
	id := r.res.st.lastID
	if n := len(r.ids); n > 0 && id.Less(r.ids[n-1]) {
		id = r.ids[n-1]
	}
	if n := len(r.tail); n > 0 && id.Less(r.tail[n-1].id) {
		id = r.tail[n-1].id
	}
	return id
}

// tailAfter returns the frames of r's tail after id.
func (r *sharedRead) tailAfter(id protocol.ID) []historyEntry {
	j, found := slices.BinarySearchFunc(r.tail, id, compareFrame)
	if found {
		j++
	}
	return tailEntries(r.tail[j:])
}

func compareID(a, b protocol.ID) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

func compareFrame(f *frame, id protocol.ID) int { return compareID(f.id, id) }

func tailEntries(tail []*frame) []historyEntry {
	if len(tail) == 0 {
		return nil
	}
	out := make([]historyEntry, len(tail))
	for i, f := range tail {
		out[i].f = f
	}
	return out
}

// addedLocked adds a frame just fanned out to the tail of the job's read.
// The jobSub's mu is held.
func (js *jobSub) addedLocked(f *frame) {
	r := js.read
	if r == nil || r.sealed {
		return
	}
	if len(r.tail) >= maxTail {
		js.sealLocked()
		return
	}
	r.tail = append(r.tail, f)
	if f.typ.Terminal() {
		r.finished = true
	}
}

// sealLocked seals the job's read, if it has one: its tail stops growing
// and the streams that join from now on make a read of their own. The
// jobSub's mu is held.
func (js *jobSub) sealLocked() {
	if r := js.read; r != nil && !r.sealed {
		r.sealed, r.sealedAt = true, js.seq
	}
}

// dropReadLocked forgets r once its time is up (or its read failed): the
// streams that use it have it already. The jobSub's mu is held.
func (js *jobSub) dropReadLocked(r *sharedRead) {
	if !r.sealed {
		r.sealed, r.sealedAt = true, js.seq
	}
	if js.read == r {
		js.read = nil
	}
}
