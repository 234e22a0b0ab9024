package gateway

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// Errors of Hub.join. All are transient: the client should come back.
var (
	errDraining   = errors.New("gateway: instance is draining")
	errJobFull    = errors.New("gateway: too many streams for this job")
	errNotReady   = errors.New("gateway: job subscription not ready")
	errHubStopped = errors.New("gateway: hub stopped")
)

// maxPending bounds the live frames a job holds back while it refills a gap
// from its stream; past it the refill simply reads the stream again.
const maxPending = 10000

// A Hub is this instance's registry of streams. It keeps one Redis
// subscription per job, however many local clients watch it, on a few shared
// pub/sub connections (shards), and fans each event out to the job's clients:
// encoded once, the same bytes for all, into a bounded queue per client that
// is never waited on.
//
// The Hub is owned by a Server; its methods are safe for concurrent use.
type Hub struct {
	rdb     redis.UniversalClient
	keys    protocol.Keys
	store   *store
	enc     *encoder
	metrics *metrics
	log     *slog.Logger

	maxPerJob      int
	clientBuffer   int
	joinTimeout    time.Duration
	retry          time.Duration
	canaryInterval time.Duration
	redisTimeout   time.Duration

	seed   maphash.Seed
	shards []*shard

	draining  atomic.Bool
	running   atomic.Bool
	canaryNow chan struct{} // a connection was just subscribed: prove it now

	ctx context.Context // the hub's lifetime, set by Serve before anything uses it
	wg  sync.WaitGroup  // resync goroutines
}

// A client is one open stream as the hub sees it.
type client struct {
	includeReport bool
	limit         int // most frames queued before the client is cut as slow

	qmu   sync.Mutex // guards queue
	queue []*frame   // frames to write, oldest first; keeps its capacity between drains

	kicked     chan struct{} // closed when the hub ends the stream
	kickOnce   sync.Once
	kickReason string        // set before kicked is closed
	kickRetry  time.Duration // retry hint to send on the way out; 0 for none
	// notify, once set, is called after a frame is queued or the client is
	// kicked: it wakes the stream's writer (see stream). It never blocks.
	notify atomic.Pointer[func()]

	// Guarded by the job's mu.
	idx    int
	known  bool        // the handler has reported where the stream stands
	base   protocol.ID // where the snapshot or replay left the stream
	queued protocol.ID // newest frame put in the queue
}

func newClient(buffer int, includeReport bool) *client {
	return &client{limit: buffer, includeReport: includeReport, kicked: make(chan struct{})}
}

// push queues f and wakes the stream. It never blocks; it reports false,
// queueing nothing, when the queue is full.
func (c *client) push(f *frame) bool {
	c.qmu.Lock()
	if len(c.queue) >= c.limit {
		c.qmu.Unlock()
		return false
	}
	c.queue = append(c.queue, f)
	c.qmu.Unlock()
	if n := c.notify.Load(); n != nil {
		(*n)()
	}
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
		close(c.kicked)
		first = true
	})
	if n := c.notify.Load(); first && n != nil {
		(*n)()
	}
	return first
}

// pos is the newest event the client has or has queued. Guarded by the job's mu.
func (c *client) pos() protocol.ID {
	if c.queued.Less(c.base) {
		return c.base
	}
	return c.queued
}

type subState uint8

const (
	stateIdle          subState = iota // not subscribed on the current connection
	stateSubscribing                   // SUBSCRIBE sent, confirmation pending
	stateLive                          // confirmed: events flow
	stateUnsubscribing                 // UNSUBSCRIBE sent, confirmation pending
)

// A jobSub is one job's subscription and its local clients.
type jobSub struct {
	job     string
	channel string
	shard   *shard

	// Guarded by shard.mu.
	refs   int           // joined clients
	state  subState      // of the subscription on the shard's current connection
	ready  chan struct{} // closed once the subscription is confirmed
	resync bool          // clients were live when the connection was lost: refill on confirmation

	mu        sync.Mutex // guards the fields below; taken after shard.mu, never before
	clients   []*client
	lastID    protocol.ID // newest frame fanned out
	resyncing bool        // live frames wait in pending while the gap is refilled
	pending   []*frame
	overflow  bool // pending filled up: read the stream again
}

func newHub(rdb redis.UniversalClient, cfg Config, st *store, enc *encoder, m *metrics, instance string) *Hub {
	h := &Hub{
		rdb: rdb, keys: st.keys, store: st, enc: enc, metrics: m, log: cfg.Logger,
		maxPerJob: cfg.MaxConnectionsPerJob, clientBuffer: cfg.ClientBuffer, joinTimeout: cfg.JoinTimeout,
		retry: cfg.Retry, canaryInterval: cfg.CanaryInterval, redisTimeout: cfg.RedisTimeout,
		seed: maphash.MakeSeed(), ctx: context.Background(), canaryNow: make(chan struct{}, 1),
	}
	for i := range cfg.PubSubConns {
		h.shards = append(h.shards, newShard(h, i, instance))
	}
	return h
}

// run runs the pub/sub connections and the canary until ctx ends, then
// waits for every goroutine the hub started.
func (h *Hub) run(ctx context.Context) {
	h.running.Store(true)
	var wg sync.WaitGroup
	for _, s := range h.shards {
		wg.Go(func() { s.run(ctx) })
	}
	wg.Go(func() { h.canaryLoop(ctx) })
	wg.Wait()
	h.running.Store(false)
	h.wg.Wait()
	// Whatever is still open ends now.
	for _, c := range h.clients() {
		c.kick(reasonShutdown, jitter(h.retry))
	}
}

func (h *Hub) shardFor(job string) *shard {
	return h.shards[maphash.String(h.seed, job)%uint64(len(h.shards))]
}

// join registers c as a client of job and waits until the job's live
// subscription is confirmed, so that whatever the caller reads from Redis
// afterwards cannot miss an event: attach first, read second.
func (h *Hub) join(ctx context.Context, job string, c *client) (*jobSub, error) {
	if h.draining.Load() {
		return nil, errDraining
	}
	s := h.shardFor(job)
	channel := h.keys.Live(job)
	s.mu.Lock()
	js := s.jobs[channel]
	if js == nil {
		js = &jobSub{job: job, channel: channel, shard: s, ready: make(chan struct{})}
		s.jobs[channel] = js
	}
	if h.maxPerJob > 0 && js.refs >= h.maxPerJob {
		s.mu.Unlock()
		return nil, errJobFull
	}
	js.refs++
	if js.state == stateIdle {
		s.markDirtyLocked(js)
	}
	ready := js.ready
	js.mu.Lock()
	c.idx = len(js.clients)
	js.clients = append(js.clients, c)
	js.mu.Unlock()
	s.mu.Unlock()

	timer := time.NewTimer(h.joinTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return js, nil
	case <-ctx.Done():
		h.leave(js, c)
		return nil, ctx.Err()
	case <-timer.C:
		h.leave(js, c)
		return nil, errNotReady
	}
}

// live reports whether job has a confirmed subscription on this instance,
// which means it existed and was running when a client last joined.
func (h *Hub) live(job string) bool {
	s := h.shardFor(job)
	s.mu.RLock()
	defer s.mu.RUnlock()
	js := s.jobs[h.keys.Live(job)]
	return js != nil && js.state == stateLive
}

// leave unregisters c; the job is unsubscribed once its last client leaves.
func (h *Hub) leave(js *jobSub, c *client) {
	s := js.shard
	s.mu.Lock()
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
	if js.refs == 0 {
		s.markDirtyLocked(js)
	}
	s.mu.Unlock()
}

// started records where the client's stream stands after its snapshot or
// replay: later frames are filtered against it, and a refill after a Redis
// reconnect starts from the oldest such point of the job's clients.
func (h *Hub) started(js *jobSub, c *client, at protocol.ID) {
	js.mu.Lock()
	c.base, c.known = at, true
	js.mu.Unlock()
}

// publish fans a live frame out to the job's clients.
func (js *jobSub) publish(f *frame, m *metrics) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.resyncing {
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
}

// sendLocked offers f to every client that does not have it yet. It never
// blocks: a client whose queue is full is disconnected and will resume from
// the stream.
func (js *jobSub) sendLocked(f *frame, m *metrics) {
	for _, c := range js.clients {
		if !c.pos().Less(f.id) {
			continue
		}
		if c.push(f) {
			c.queued = f.id
		} else if c.kick(reasonSlow, 0) {
			m.slowDisconnects.Inc()
		}
	}
}

// startResync refills the gap a lost pub/sub connection left in a job: it
// reads the stream after the oldest point any client of the job stands at,
// fans those entries out (each client filters what it has), then lets the
// live frames that arrived meanwhile through.
func (h *Hub) startResync(js *jobSub) {
	h.wg.Go(func() { h.resync(js) })
}

func (h *Hub) resync(js *jobSub) {
	js.mu.Lock()
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

	first := true
	for have {
		var entries []redis.XMessage
		var err error
		if first {
			// The first read also checks that the oldest position is still
			// in the history. If the outage outlasted it, the gap cannot be
			// refilled: those clients resume through their Last-Event-ID,
			// which tells them so (a reset event and the snapshot) instead
			// of skipping ahead in silence.
			var found bool
			entries, found, err = h.store.after(h.ctx, js.job, from)
			if err == nil && !found {
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
		} else {
			entries, err = h.store.page(h.ctx, js.job, from, replayPage)
		}
		if err != nil {
			h.metrics.redisErrors.WithLabelValues("resync").Inc()
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
		if !more {
			h.endResyncLocked(js)
			js.mu.Unlock()
			return
		}
		js.mu.Unlock()
	}
	js.mu.Lock()
	h.endResyncLocked(js)
	js.mu.Unlock()
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

func (h *Hub) endResyncLocked(js *jobSub) {
	for _, f := range js.pending {
		if js.lastID.Less(f.id) {
			js.lastID = f.id
			js.sendLocked(f, h.metrics)
		}
	}
	js.pending, js.overflow, js.resyncing = nil, false, false
}

// clients returns every client registered with the hub.
func (h *Hub) clients() []*client {
	var all []*client
	for _, s := range h.shards {
		s.mu.RLock()
		for _, js := range s.jobs {
			js.mu.Lock()
			all = append(all, js.clients...)
			js.mu.Unlock()
		}
		s.mu.RUnlock()
	}
	return all
}

// drain refuses new streams from now on and closes the open ones in waves
// spread over grace, each told a jittered retry, so that clients reconnect
// to other instances without arriving all at once.
func (h *Hub) drain(ctx context.Context, grace time.Duration) {
	h.draining.Store(true)
	all := h.clients()
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	waves := min(10, len(all))
	if waves == 0 {
		return
	}
	interval := grace / time.Duration(waves)
	for i := range waves {
		if i > 0 {
			select {
			case <-ctx.Done():
				for _, c := range all {
					c.kick(reasonShutdown, jitter(h.retry))
				}
				return
			case <-time.After(interval):
			}
		}
		for _, c := range all[i*len(all)/waves : (i+1)*len(all)/waves] {
			c.kick(reasonShutdown, jitter(h.retry))
		}
	}
}

// healthy reports why the hub cannot deliver live events, or nil.
func (h *Hub) healthy() error {
	if !h.running.Load() {
		return errHubStopped
	}
	for _, s := range h.shards {
		if err := s.healthy(); err != nil {
			return err
		}
	}
	return nil
}

// canaryLoop proves, every interval, that each pub/sub connection delivers:
// it publishes to a channel that only that connection listens to.
func (h *Hub) canaryLoop(ctx context.Context) {
	t := time.NewTicker(h.canaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.canaryNow:
		}
		cctx, cancel := context.WithTimeout(ctx, h.redisTimeout)
		pipe := h.rdb.Pipeline()
		for _, s := range h.shards {
			if s.connected.Load() {
				pipe.Publish(cctx, s.canary, "canary")
			}
		}
		if pipe.Len() > 0 {
			if _, err := pipe.Exec(cctx); err != nil && ctx.Err() == nil {
				h.metrics.redisErrors.WithLabelValues("canary").Inc()
				h.log.Debug("canary publish failed", "err", err)
			}
		}
		cancel()
	}
}
