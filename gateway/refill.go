package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// maxPending bounds the live frames a job holds back while it refills a gap
// from its stream; past it the refill simply reads the stream again.
const maxPending = 10000

// maxLiveLead is how far ahead of this instance's clock a live message's ID
// (the Redis clock of its XADD) may be before it is taken for one that is
// not in the stream: clock skew between hosts stays far below it.
const maxLiveLead = 30 * time.Second

// maxRefills bounds the refills that run at once, whatever the number of
// jobs whose subscriptions came back together.
const maxRefills = 8

// history reads a job's stream: the store, or a fake in unit tests.
type history interface {
	// after returns up to replayPage entries after id, and whether id
	// itself is still in the stream.
	after(ctx context.Context, job string, id protocol.ID) (entries []redis.XMessage, found bool, err error)
	// page returns up to n entries after id.
	page(ctx context.Context, job string, id protocol.ID, n int64) ([]redis.XMessage, error)
	// start reads the job's state and, with resume, up to replayPage
	// entries after from, in one round trip (see store.start).
	start(ctx context.Context, job string, resume bool, from protocol.ID) (startRead, error)
	// check reports, for each job, whether it still exists (its state
	// hash is there) and the ID of its stream's newest entry, in one round
	// trip.
	check(ctx context.Context, jobs []string) ([]jobCheck, error)
}

// jobCheck is what history.check found of one job.
type jobCheck struct {
	exists bool
	tip    protocol.ID // the newest entry of its stream; zero if none
}

var _ history = (*store)(nil)

// refillQueue holds the jobs waiting for a refill worker.
type refillQueue struct {
	mu      sync.Mutex // guards jobs and workers
	jobs    []*jobSub
	workers int
}

// refill closes the gap a lost subscription left in a job, once per job at
// a time: a refill asked for while one runs makes that one read again
// before it lets live frames through (a second refill running beside it
// would release the live frames it holds back while the first still has
// older entries to send).
func (h *Hub) refill(js *jobSub) {
	js.mu.Lock()
	if js.refilling {
		js.again = true
		js.mu.Unlock()
		return
	}
	js.refilling = true
	js.sealLocked() // live frames wait in pending, outside the tail
	js.mu.Unlock()

	q := &h.refills
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = append(q.jobs, js)
	if q.workers < maxRefills {
		q.workers++
		h.wg.Go(h.refillWorker)
	}
}

// refillWorker refills queued jobs until none is left.
func (h *Hub) refillWorker() {
	q := &h.refills
	for {
		q.mu.Lock()
		if len(q.jobs) == 0 {
			q.workers--
			q.mu.Unlock()
			return
		}
		js := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		q.mu.Unlock()
		for h.refillOnce(js) {
		}
	}
}

// refillOnce reads the job's stream after the oldest point any of its
// clients stands at, fans those entries out (each client filters what it
// has), and then, unless it must read again (again), lets the live frames
// that arrived meanwhile through. It reports whether to read again.
func (h *Hub) refillOnce(js *jobSub) (again bool) {
	js.mu.Lock()
	js.again = false
	losses := js.losses
	var from protocol.ID
	have := false
	for _, c := range js.clients {
		if !c.known {
			// Still starting: where it stands is unknown, so it resumes
			// from its own Last-Event-ID instead.
			c.kick(reasonResync, jitter(h.retry))
			continue
		}
		if p := c.pos(); !have || p.Less(from) {
			from, have = p, true
		}
	}
	js.mu.Unlock()

	first, failed := true, false
	for have {
		// The first read also checks that the oldest position is still in
		// the history. If the outage outlasted it, the gap cannot be
		// refilled: those clients resume through their Last-Event-ID, which
		// tells them so (a reset event and the snapshot) instead of
		// skipping ahead in silence.
		entries, found, err := h.readGap(js, first, from)
		if first && err == nil && !found {
			h.log.Warn("history trimmed during a pub/sub outage; the job's streams resume from their Last-Event-ID", "job", js.job)
			oldest := firstID(entries)
			js.mu.Lock()
			for _, c := range js.clients {
				if c.pos().Less(oldest) { // it missed entries that are gone
					c.kick(reasonResync, jitter(h.retry))
				}
			}
			js.mu.Unlock()
		}
		first = false
		if err != nil {
			failed = true
			h.log.Warn("refill after pub/sub reconnect failed; closing the job's streams so they resume", "job", js.job, "err", err)
			js.mu.Lock()
			for _, c := range js.clients {
				c.kick(reasonRedis, jitter(h.retry))
			}
			js.mu.Unlock()
			break
		}
		frames := make([]*frame, 0, len(entries))
		for _, e := range entries {
			id, typ, data, err := entryFields(e)
			if err == nil {
				var f *frame
				if f, err = h.enc.frame(js.job, id, typ, data, false); err == nil {
					frames = append(frames, f)
				}
			}
			if err != nil {
				h.log.Warn("skipping unreadable stream entry", "job", js.job, "err", err)
			}
		}
		js.mu.Lock()
		for _, f := range batch(frames, replayPage) {
			js.sendLocked(f, h.metrics)
			if js.lastID.Less(f.id) {
				js.lastID = f.id
			}
		}
		if len(entries) > 0 {
			from, _ = protocol.ParseID(entries[len(entries)-1].ID)
		}
		more := len(entries) == replayPage
		if !more && js.overflow {
			// Too much arrived live while we read: read again from here.
			js.overflow, js.pending, more = false, js.pending[:0], true
		}
		js.mu.Unlock()
		if !more {
			break
		}
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.again {
		return true
	}
	for _, f := range js.pending {
		if js.lastID.Less(f.id) {
			js.lastID = f.id
			js.sendLocked(f, h.metrics)
		}
	}
	js.pending, js.overflow, js.refilling = nil, false, false
	if js.losses == losses && !failed {
		js.gap = false // refilled, and not lost again meanwhile (a failed refill leaves the gap: starts read on their own)
	}
	return false
}

// A refill read that fails is made again, refillRetryFirst after the
// failure and then twice as long each time up to refillRetryMax, until
// refillRetryFor has passed since the first failure; only then are the
// job's streams closed to resume. A Redis restarted with persistence
// answers LOADING to every read while it loads its dataset, yet SUBSCRIBE
// already works, so the subscription comes back (and the refill begins)
// before the stream can be read; and a pooled connection to the old server
// fails its first command. go-redis's own retries of those end within one
// read's timeout. Both pass within a moment to seconds, and a pause is
// cheaper than every stream of the job reconnecting at once, each to read
// the stream on start from a Redis that may still be loading. Past a few
// seconds, waiting costs more than the reconnect: live frames pile up in
// pending (to maxPending), and the refill holds one of the maxRefills
// workers that the other jobs' refills wait for.
const (
	refillRetryFirst = 50 * time.Millisecond
	refillRetryMax   = time.Second
	refillRetryFor   = 5 * time.Second
)

// readGap makes one read of a refill, again after a failure while the
// retry budget and the hub last (see refillRetryFor). The first read is
// history.after, which also reports whether from is still in the stream;
// the next ones are history.page. Every failed read is counted.
func (h *Hub) readGap(js *jobSub, first bool, from protocol.ID) (entries []redis.XMessage, found bool, err error) {
	wait := refillRetryFirst
	var until time.Time
	for {
		if first {
			entries, found, err = h.hist.after(h.ctx, js.job, from)
		} else {
			entries, err = h.hist.page(h.ctx, js.job, from, replayPage)
		}
		if err == nil {
			return entries, found, nil
		}
		h.metrics.redisErrors.WithLabelValues("resync").Inc()
		now := time.Now()
		if until.IsZero() {
			until = now.Add(refillRetryFor)
			h.log.Warn("refill read failed; reading again", "job", js.job, "err", err, "retry_for", refillRetryFor)
		}
		if !now.Add(wait).Before(until) {
			return nil, false, err
		}
		t := time.NewTimer(wait)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return nil, false, err
		case <-t.C:
		}
		wait = min(2*wait, refillRetryMax)
	}
}

// firstID is the ID of the first entry, or the largest ID when there is
// none (every position is then before it).
func firstID(entries []redis.XMessage) protocol.ID {
	if len(entries) == 0 {
		return protocol.ID{Ms: ^uint64(0), Seq: ^uint64(0)}
	}
	id, err := protocol.ParseID(entries[0].ID)
	if err != nil {
		return protocol.ID{Ms: ^uint64(0), Seq: ^uint64(0)}
	}
	return id
}
