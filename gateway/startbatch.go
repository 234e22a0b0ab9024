package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// The start reads (and state and history reads) of different jobs are sent
// together:
// in a reconnect storm a pod gets the first streams of a thousand jobs
// within a second, and one round trip per job is a thousand reads and
// writes on both sides, and as many pooled connections in use at once. A read that finds no other waiting goes out at once, as
// before; those that come while reads are in flight wait for the next
// pipeline, up to maxStartBatch jobs in one.
const (
	maxStartBatch   = 64 // jobs in one pipeline: a reply of at most 64 pages of history
	maxStartFlushes = 2  // pipelines in flight at once
)

// startQueue holds the start reads waiting for a pipeline. Its zero value
// is ready.
//
// Concurrency: add is safe for concurrent use. Each flush is a goroutine of
// its own that it starts, and that returns once it finds the queue empty.
type startQueue struct {
	mu      sync.Mutex
	waiting []*startReq
	flushes int // flush goroutines running
}

type startReq struct {
	what    string // "start", "state" or "history", for errors
	job     string
	noState bool // read the history only
	resume  bool // read the history after from
	from    protocol.ID
	ctx     context.Context // the caller's, bounded by the store's timeout: done, it is not sent
	res     startRead
	err     error
	done    chan struct{} // closed once res and err are set
}

// start reads the job's state and, with resume, up to replayPage stream
// entries after from, in one round trip, shared with the start reads of
// other jobs that wait at the same time (see startQueue). The wait and
// the read are bounded by ctx and the store's timeout.
func (s *store) start(ctx context.Context, job string, resume bool, from protocol.ID) (startRead, error) {
	return s.read(ctx, &startReq{what: "start", job: job, resume: resume, from: from})
}

// read queues req, and returns its answer once its pipeline is read, or
// when ctx ends or the store's timeout passes, whichever is first: a read
// that waits behind a Redis that hangs fails in the store's timeout, as it
// did alone, and is not sent once its caller has its answer.
func (s *store) read(ctx context.Context, req *startReq) (startRead, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req.ctx, req.done = ctx, make(chan struct{})
	q := &s.starts
	q.mu.Lock()
	q.waiting = append(q.waiting, req)
	flush := q.flushes < maxStartFlushes
	if flush {
		q.flushes++
	}
	q.mu.Unlock()
	if flush {
		go s.flushStarts()
	}
	select {
	case <-req.done:
		return req.res, req.err
	case <-ctx.Done():
		return startRead{}, fmt.Errorf("read %s of %q: %w", req.what, req.job, ctx.Err())
	}
}

// flushStarts sends the waiting start reads, maxStartBatch to a pipeline,
// until none is left.
func (s *store) flushStarts() {
	q := &s.starts
	for {
		q.mu.Lock()
		n := min(len(q.waiting), maxStartBatch)
		if n == 0 {
			q.flushes--
			q.waiting = nil // let a storm's backing array go
			q.mu.Unlock()
			return
		}
		batch := slices.Clone(q.waiting[:n])
		clear(q.waiting[:n]) // the answers go with their callers
		q.waiting = q.waiting[n:]
		q.mu.Unlock()
		s.readStarts(batch)
	}
}

// readStarts reads batch in one pipeline and answers each request; those
// whose callers have their answer already are not sent.
func (s *store) readStarts(batch []*startReq) {
	batch = slices.DeleteFunc(batch, func(req *startReq) bool {
		if err := req.ctx.Err(); err != nil {
			req.err = fmt.Errorf("read %s of %q: %w", req.what, req.job, err)
			close(req.done)
			return true
		}
		return false
	})
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	states := make([]*redis.SliceCmd, len(batch))
	hists := make([]*redis.XMessageSliceCmd, len(batch))
	for i, req := range batch {
		if !req.noState {
			states[i] = pipe.HMGet(ctx, s.keys.State(req.job), stateFields...)
		}
		if req.resume {
			hists[i] = pipe.XRangeN(ctx, s.keys.Events(req.job), req.from.String(), "+", replayPage+1)
		}
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
	for i, req := range batch {
		req.res, req.err = startReply(req, states[i], hists[i])
		close(req.done)
	}
}

func startReply(req *startReq, state *redis.SliceCmd, hist *redis.XMessageSliceCmd) (startRead, error) {
	if state != nil && state.Err() != nil {
		return startRead{}, fmt.Errorf("read %s of %q: %w", req.what, req.job, state.Err())
	}
	if hist != nil && hist.Err() != nil {
		return startRead{}, fmt.Errorf("read %s of %q: %w", req.what, req.job, hist.Err())
	}
	var r startRead
	if state != nil {
		var err error
		if r.st, err = parseState(req.job, state.Val()); err != nil {
			return startRead{}, err
		}
	}
	if req.resume {
		r.entries, r.found, r.more = cutAfter(hist.Val(), req.from)
	}
	return r, nil
}
