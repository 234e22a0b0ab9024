package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// A finished job's history changes no more (the publish script refuses
// events after the terminal one), so the resumes of a finished job share
// one read of it, each from its own Last-Event-ID, until none has used it
// for shareFor (no maxShare: with no tail to grow, a read does not age): a pod that dies with clients of finished jobs (a
// client that dropped before the terminal event) sends them to the others
// at once. A read serves the resumes from its own point or later ones; one
// from an earlier point reads on its own, and later ones share that.
//
// Concurrency: Server.finishedHistory is safe for concurrent use.
type finishedReads struct {
	mu sync.Mutex
	m  map[string]*finishedRead // by job
}

type finishedRead struct {
	from protocol.ID
	done chan struct{}
	used atomic.Int64 // when a resume last used it, in Unix nanoseconds

	// Set before done is closed; read-only after.
	history []historyEntry
	ids     []protocol.ID // the entries' IDs (a history entry that failed to decode has no frame)
	found   bool          // from is in the stream
	more    bool          // the page is full: the stream may hold more
	err     error
}

// finishedHistory returns the history after from of job, a finished job;
// whether from is still in the stream (see store.after); and whether the
// stream may hold more than history. The read is shared with the job's
// other resumes (see finishedReads).
func (s *Server) finishedHistory(ctx context.Context, job string, from protocol.ID) (history []historyEntry, found, more bool, err error) {
	fr := &s.finished
	fr.mu.Lock()
	r := fr.m[job]
	own := r == nil || from.Less(r.from)
	if own {
		r = &finishedRead{from: from, done: make(chan struct{})}
		if fr.m == nil {
			fr.m = map[string]*finishedRead{}
		}
		fr.m[job] = r
	}
	fr.mu.Unlock()

	if own {
		s.metrics.startReads.WithLabelValues("issued").Inc()
		s.readFinished(job, r)
	} else {
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, false, false, ctx.Err()
		}
	}
	if r.err != nil {
		return nil, false, false, r.err
	}
	if h, found, more, ok := r.serve(from); ok {
		if !own {
			r.used.Store(time.Now().UnixNano())
			s.metrics.startReads.WithLabelValues("shared").Inc()
		}
		return h, found, more, nil
	}
	// Past the page r read: a read of its own.
	s.metrics.startReads.WithLabelValues("issued").Inc()
	entries, found, err := s.store.after(ctx, job, from)
	if err != nil {
		return nil, false, false, err
	}
	return s.enc.history(job, entries), found, len(entries) == replayPage, nil
}

// readFinished makes r's read, not bounded by the request that makes it
// (the others wait for it too) but by the store's timeout, and keeps r
// until no resume has used it for shareFor.
func (s *Server) readFinished(job string, r *finishedRead) {
	entries, found, err := s.store.after(context.Background(), job, r.from)
	r.err = err
	if err == nil {
		r.history, r.found, r.more = s.enc.history(job, entries), found, len(entries) == replayPage
		r.ids = make([]protocol.ID, len(entries))
		for i, e := range entries {
			r.ids[i], _ = protocol.ParseID(e.ID)
		}
	}
	close(r.done)
	drop := func() {
		s.finished.mu.Lock()
		defer s.finished.mu.Unlock()
		if s.finished.m[job] == r {
			delete(s.finished.m, job)
		}
	}
	if err != nil {
		drop()
		return
	}
	r.used.Store(time.Now().UnixNano())
	var expire func()
	expire = func() {
		if idle := time.Since(time.Unix(0, r.used.Load())); idle < shareFor {
			time.AfterFunc(shareFor-idle, expire)
			return
		}
		drop()
	}
	time.AfterFunc(shareFor, expire)
}

// serve returns the history after from out of r, from at or after r.from.
// It reports false when r cannot tell: from is past the page r read.
func (r *finishedRead) serve(from protocol.ID) (history []historyEntry, found, more, ok bool) {
	if from == r.from {
		return r.history, r.found, r.more, true
	}
	// r holds every entry from r.from on, up to its page's end, whether
	// r.from itself is still there or not.
	i, inPage := slices.BinarySearchFunc(r.ids, from, compareID)
	switch {
	case inPage:
		return r.history[i+1:], true, r.more, true
	case r.more && i == len(r.ids):
		return nil, false, false, false // past the page r read
	default:
		// r holds every entry from r.from up to from: from is not in
		// the stream.
		return nil, false, false, true
	}
}
