package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// Errors of Hub.join. All are transient: the client should come back.
var (
	errDraining   = errors.New("gateway: instance is draining")
	errJobFull    = errors.New("gateway: too many streams for this job")
	errNotReady   = errors.New("gateway: job subscription not ready")
	errHubStopped = errors.New("gateway: hub stopped")
)

// A Hub is this instance's registry of streams and their fan-out. It asks
// its broker for one subscription per job, however many local clients watch
// it, keeps it for a linger after the last client leaves, and fans each
// live event out to the job's clients: encoded once, the same bytes for
// all, into a bounded queue per client that is never waited on. When the
// broker loses a subscription, the hub refills the gap from the job's
// stream once it is back (refill.go).
//
// Concurrency: the Hub is owned by a Server; its methods are safe for
// concurrent use. Its own goroutines (the broker's, the refill workers) are
// started by run and have ended when run returns.
type Hub struct {
	broker  broker
	hist    history
	enc     *encoder
	metrics *metrics
	log     *slog.Logger

	maxPerJob   int
	joinTimeout time.Duration
	linger      time.Duration
	retry       time.Duration
	vanishEvery time.Duration // how often jobs with clients are checked to still exist

	mu   sync.RWMutex // guards jobs and, of every jobSub, refs, live, ready, lostLive and lingering
	jobs map[string]*jobSub

	draining atomic.Bool
	drained  chan struct{} // closed when the drain begins
	stopped  atomic.Bool   // run has returned: readiness fails for good

	refills refillQueue
	ctx     context.Context // the hub's lifetime, set by run before the broker runs
	wg      sync.WaitGroup  // refill workers
}

// A jobSub is one job's subscription and its local clients.
type jobSub struct {
	job string

	// Guarded by Hub.mu.
	refs      int           // joined clients
	live      bool          // the broker confirmed the subscription
	ready     chan struct{} // closed once live
	lostLive  bool          // the subscription was lost while live: refill when it is back
	lingering *time.Timer   // drops the subscription; set while refs is 0

	mu        sync.Mutex // guards the fields below; taken after Hub.mu, never before
	clients   []*client
	lastID    protocol.ID // newest frame fanned out
	refilling bool        // a refill runs; live frames wait in pending
	again     bool        // the subscription was lost again during the refill: refill again
	pending   []*frame
	overflow  bool // pending filled up: read the stream again

	// The start reads of the job's streams (start.go).
	seq    uint64      // clients joined so far; each client's seq is its place
	read   *sharedRead // the read that streams starting now share, or nil
	gap    bool        // the subscription was lost and is not refilled yet
	losses int         // times it was lost: a refill clears gap only if none came during it
}

// newHub returns a hub without a broker; set one (built with h.events())
// before run.
func newHub(cfg Config, hist history, enc *encoder, m *metrics) *Hub {
	return &Hub{
		hist: hist, enc: enc, metrics: m, log: cfg.Logger,
		maxPerJob: cfg.MaxConnectionsPerJob, joinTimeout: cfg.JoinTimeout,
		linger: cfg.Linger, retry: cfg.Retry, vanishEvery: cfg.Heartbeat,
		jobs: map[string]*jobSub{}, drained: make(chan struct{}), ctx: context.Background(),
	}
}

// events are the hub's callbacks for its broker.
func (h *Hub) events() brokerEvents {
	return brokerEvents{confirmed: h.confirmed, delivered: h.delivered, lost: h.lost}
}

// run runs the broker until ctx ends, then waits for every goroutine the
// hub started and ends the streams still open.
func (h *Hub) run(ctx context.Context) {
	h.ctx = ctx
	var wg sync.WaitGroup
	wg.Go(func() { h.watchVanished(ctx) })
	h.broker.run(ctx)
	wg.Wait()
	h.stopped.Store(true)
	h.wg.Wait()
	h.mu.Lock()
	for _, js := range h.jobs {
		if js.lingering != nil {
			js.lingering.Stop()
		}
	}
	h.mu.Unlock()
	for _, c := range h.clients() {
		c.kick(reasonShutdown, jitter(h.retry))
	}
}

// join registers c as a client of job and waits until the job's live
// subscription is confirmed, so that whatever the caller reads from Redis
// afterwards cannot miss an event: attach first, read second.
func (h *Hub) join(ctx context.Context, job string, c *client) (*jobSub, error) {
	h.mu.Lock()
	// Checked under the lock that drain sets it under: a client registered
	// now is either listed by drain or sees draining.
	if h.draining.Load() {
		h.mu.Unlock()
		return nil, errDraining
	}
	js := h.jobs[job]
	if js == nil {
		js = &jobSub{job: job, ready: make(chan struct{})}
		h.jobs[job] = js
		h.broker.subscribe(job)
	}
	if h.maxPerJob > 0 && js.refs >= h.maxPerJob {
		h.mu.Unlock()
		return nil, errJobFull
	}
	js.refs++
	if js.lingering != nil {
		js.lingering.Stop()
		js.lingering = nil
	}
	ready := js.ready
	js.mu.Lock()
	c.idx = len(js.clients)
	js.clients = append(js.clients, c)
	js.seq++
	c.seq = js.seq
	js.mu.Unlock()
	h.mu.Unlock()

	timer := time.NewTimer(h.joinTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return js, nil
	case <-h.drained: // nothing written yet: refused at once
		h.leave(js, c)
		return nil, errDraining
	case <-ctx.Done():
		h.leave(js, c)
		return nil, ctx.Err()
	case <-timer.C:
		h.leave(js, c)
		return nil, errNotReady
	}
}

// watched reports whether job has a subscription on this instance that
// is confirmed or still being made for the first time: either way the job
// existed and was running when a client last joined it.
func (h *Hub) watched(job string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	js := h.jobs[job]
	return js != nil && (js.live || !js.lostLive)
}

// leave unregisters c. Once the job's last client has left, its
// subscription lingers, so that a client that comes straight back (a
// reconnect) costs Redis nothing, and is dropped after the linger.
func (h *Hub) leave(js *jobSub, c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	js.mu.Lock()
	last := len(js.clients) - 1
	if c.idx <= last && js.clients[c.idx] == c {
		js.clients[c.idx] = js.clients[last]
		js.clients[c.idx].idx = c.idx
		js.clients[last] = nil
		js.clients = js.clients[:last]
	}
	js.mu.Unlock()
	js.refs--
	if js.refs > 0 {
		return
	}
	if h.linger <= 0 {
		h.dropLocked(js)
		return
	}
	var t *time.Timer
	t = time.AfterFunc(h.linger, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if js.lingering == t { // not stopped by a join, nor replaced since
			h.dropLocked(js)
		}
	})
	js.lingering = t
}

// dropLocked forgets a job without clients and drops its subscription.
// h.mu is held.
func (h *Hub) dropLocked(js *jobSub) {
	if h.jobs[js.job] != js {
		return
	}
	delete(h.jobs, js.job)
	js.lingering = nil
	if js.live {
		h.metrics.subscribedJobs.Dec()
	}
	h.broker.unsubscribe(js.job)
}

// started records where the client's stream stands after its snapshot or
// replay: later frames are filtered against it, and a refill after a lost
// subscription starts from the oldest such point of the job's clients.
func (h *Hub) started(js *jobSub, c *client, at protocol.ID) {
	js.mu.Lock()
	c.base, c.known = at, true
	js.mu.Unlock()
}

// confirmed is the broker telling that job's subscription is in place.
func (h *Hub) confirmed(job string) {
	h.mu.Lock()
	js := h.jobs[job]
	if js == nil || js.live {
		h.mu.Unlock()
		return
	}
	js.live = true
	close(js.ready)
	h.metrics.subscribedJobs.Inc()
	refill := js.lostLive
	js.lostLive = false
	h.mu.Unlock()
	if refill {
		h.refill(js)
	}
}

// lost is the broker telling that job's subscription failed: clients that
// join now wait for it to be back, and the gap is refilled then.
func (h *Hub) lost(job string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	js := h.jobs[job]
	if js == nil || !js.live {
		return
	}
	js.live, js.lostLive = false, true
	js.ready = make(chan struct{})
	h.metrics.subscribedJobs.Dec()
	js.mu.Lock()
	js.gap = true
	js.losses++
	js.sealLocked() // its tail misses what is published until the refill
	js.mu.Unlock()
}

// delivered is the broker handing over a live message of job.
func (h *Hub) delivered(job, payload string) {
	h.mu.RLock()
	js := h.jobs[job]
	h.mu.RUnlock()
	if js == nil {
		return // dropped meanwhile
	}
	lm, err := protocol.DecodeLive(payload)
	if err != nil {
		h.log.Warn("ignoring a live message that is not protocol v1", "job", job, "err", err)
		return
	}
	if limit := uint64(time.Now().Add(maxLiveLead).UnixMilli()); lm.ID.Ms > limit {
		// No stream entry can have this ID yet: the stream is the truth,
		// the live channel a hint. Drop it, and re-read the stream (once
		// per job: a refill) so the job goes on from what it really holds.
		h.metrics.liveMismatches.WithLabelValues("ahead").Inc()
		h.log.Warn("ignoring a live message whose ID is ahead of any stream entry; re-reading the job's stream", "job", job, "id", lm.ID.String())
		h.refill(js)
		return
	}
	f, err := h.enc.frame(job, lm.ID, lm.Type, lm.Data, true)
	if err != nil {
		h.log.Warn("ignoring an unreadable live event", "job", job, "err", err)
		return
	}
	js.publish(f, h.metrics)
}

// watchVanished checks, every vanishEvery, each job with clients (not each
// client), in one pipelined round trip:
//   - that it still exists: the streams of a job whose keys were deleted,
//     flushed, evicted or expired would otherwise hear nothing until their
//     timeout; they are closed with a retry hint, and their reconnect gets
//     the 404 that stops an EventSource;
//   - that its position is not ahead of its stream: a made-up live message
//     (an ID no entry has) moved it, hiding the real events behind that ID;
//     its clients are sent back to resume from their Last-Event-ID, which
//     answers from what the stream really holds.
func (h *Hub) watchVanished(ctx context.Context) {
	t := time.NewTicker(h.vanishEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.RLock()
		var jobs []string
		var sent []protocol.ID // each job's position, taken before its stream is read
		for job, js := range h.jobs {
			if js.live && js.refs > 0 {
				js.mu.Lock()
				jobs, sent = append(jobs, job), append(sent, js.lastID)
				js.mu.Unlock()
			}
		}
		h.mu.RUnlock()
		for len(jobs) > 0 {
			n := min(len(jobs), replayPage)
			checks, err := h.hist.check(ctx, jobs[:n])
			if err != nil {
				break // Redis trouble is the canary's to report; try again next time
			}
			for i, c := range checks {
				switch {
				case !c.exists:
					h.vanished(jobs[i])
				case c.tip.Less(sent[i]): // a stream only grows at its end
					h.aheadOfStream(jobs[i], sent[i], c.tip)
				}
			}
			jobs, sent = jobs[n:], sent[n:]
		}
	}
}

// vanished closes the streams of a job that no longer exists.
func (h *Hub) vanished(job string) {
	h.mu.RLock()
	js := h.jobs[job]
	h.mu.RUnlock()
	if js == nil {
		return
	}
	h.log.Warn("job vanished from Redis (deleted, flushed, evicted or expired); closing its streams", "job", job)
	js.mu.Lock()
	defer js.mu.Unlock()
	js.sealLocked()
	for _, c := range js.clients {
		c.kick(reasonJobGone, jitter(h.retry))
	}
}

// aheadOfStream sends the clients of a job whose position (sent) is ahead
// of its stream's newest entry (tip) back to resume, and takes the job's
// position back to the tip, so that the real events after it flow again.
func (h *Hub) aheadOfStream(job string, sent, tip protocol.ID) {
	h.mu.RLock()
	js := h.jobs[job]
	h.mu.RUnlock()
	if js == nil {
		return
	}
	h.metrics.liveMismatches.WithLabelValues("not_in_stream").Inc()
	h.log.Warn("the job's position is ahead of its stream (a live message that is not in it); its streams resume from their Last-Event-ID",
		"job", job, "position", sent.String(), "stream_tip", tip.String())
	js.mu.Lock()
	defer js.mu.Unlock()
	js.sealLocked()
	if js.lastID == sent {
		js.lastID = tip
	}
	for _, c := range js.clients {
		c.kick(reasonResync, jitter(h.retry))
	}
}

// publish fans a live frame out to the job's clients.
func (js *jobSub) publish(f *frame, m *metrics) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.refilling {
		if len(js.pending) < maxPending {
			js.pending = append(js.pending, f)
		} else {
			js.overflow = true
		}
		return
	}
	if !js.lastID.Less(f.id) {
		return // already fanned out by a refill that read it from the stream
	}
	js.lastID = f.id
	js.sendLocked(f, m)
	js.addedLocked(f)
}

// sendLocked offers f to every client that does not have it yet. It never
// blocks: a client whose queue is full is disconnected and will resume from
// the stream. A client that was kicked gets nothing more: it may be kicked
// because it misses entries before f (a refill that failed, or found them
// trimmed), and a drain that had passed its kicked check would write f,
// so that its client resumed after entries it never got.
func (js *jobSub) sendLocked(f *frame, m *metrics) {
	fo := fanOut{want: len(js.clients)}
	for _, c := range js.clients {
		if c.gone.Load() || !c.pos().Less(f.id) {
			continue
		}
		if c.offer(f) {
			c.queued = f.id
			fo.wake(c)
		} else if c.kick(reasonSlow, 0) {
			m.slowDisconnects.Inc()
		}
	}
	fo.run()
}

// clients returns every client registered with the hub.
func (h *Hub) clients() []*client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var all []*client
	for _, js := range h.jobs {
		js.mu.Lock()
		all = append(all, js.clients...)
		js.mu.Unlock()
	}
	return all
}

// drain refuses new streams from now on and closes the open ones in waves
// spread over grace, each told a jittered retry, so that clients reconnect
// to other instances without arriving all at once.
func (h *Hub) drain(ctx context.Context, grace time.Duration) {
	h.mu.Lock()
	if !h.draining.Swap(true) { // under the lock: see join
		close(h.drained)
	}
	h.mu.Unlock()
	all := h.clients()
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	waves := min(10, len(all))
	if waves == 0 {
		return
	}
	interval := grace / time.Duration(waves)
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range waves {
		if i > 0 {
			t.Reset(interval)
			select {
			case <-ctx.Done():
				for _, c := range all {
					c.kick(reasonShutdown, jitter(h.retry))
				}
				return
			case <-t.C:
			}
		}
		for _, c := range all[i*len(all)/waves : (i+1)*len(all)/waves] {
			c.kick(reasonShutdown, jitter(h.retry))
		}
	}
}

// healthy reports why the hub cannot deliver live events, or nil. It
// answers from state: it never waits on Redis.
func (h *Hub) healthy() error {
	if h.stopped.Load() {
		return errHubStopped
	}
	// Before run starts (a probe racing Serve), the broker has checked
	// nothing and says so.
	return h.broker.healthy()
}
