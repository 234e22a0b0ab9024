package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// subscribeBatch is the most channels sent in one SUBSCRIBE or UNSUBSCRIBE.
const subscribeBatch = 512

// redisBroker is the broker on Redis pub/sub: the subscriptions of all jobs
// share a few pub/sub connections (psConns), each job always on the one
// connFor picks. A canary message that each connection sends itself through
// Redis every CanaryInterval proves that it delivers; one that carries
// nothing, not even the canary, for three intervals is wedged and replaced.
//
// Concurrency: see broker. Each psConn's run loop is its connection's only
// writer of SUBSCRIBE and UNSUBSCRIBE commands, and its reader is the only
// source of its callbacks.
type redisBroker struct {
	psEnv
	rdb  redis.UniversalClient
	keys protocol.Keys

	seed     maphash.Seed
	conns    []*psConn
	redisErr atomic.Pointer[error]
}

// psEnv is what a broker's pub/sub connections share.
type psEnv struct {
	ev             brokerEvents
	metrics        *metrics
	log            *slog.Logger
	canaryInterval time.Duration
	timeout        time.Duration
	canaryNow      chan struct{} // a connection was just subscribed: prove it now
}

// canaryDone records the outcome of a canary round in dst (what healthy
// reads) and waits for the next round: the tick, or a connection that was
// just subscribed. It reports false when ctx ended.
func (e *psEnv) canaryDone(ctx context.Context, t *time.Ticker, dst *atomic.Pointer[error], err error) bool {
	if err != nil {
		e.metrics.redisErrors.WithLabelValues("canary").Inc()
		e.log.Debug("canary publish failed", "err", err)
		err = fmt.Errorf("%w: %w", errRedisDown, err)
	}
	dst.Store(&err)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-e.canaryNow:
	}
	return true
}

func newPSEnv(cfg Config, ev brokerEvents, m *metrics) psEnv {
	return psEnv{
		ev: ev, metrics: m, log: cfg.Logger, canaryInterval: cfg.CanaryInterval, timeout: cfg.RedisTimeout,
		canaryNow: make(chan struct{}, 1),
	}
}

var _ broker = (*redisBroker)(nil)

func newRedisBroker(rdb redis.UniversalClient, cfg Config, keys protocol.Keys, ev brokerEvents, m *metrics, instance string) *redisBroker {
	b := &redisBroker{psEnv: newPSEnv(cfg, ev, m), rdb: rdb, keys: keys, seed: maphash.MakeSeed()}
	for i := range cfg.PubSubConns {
		b.conns = append(b.conns, newPSConn(&b.psEnv, rdb, false, strconv.Itoa(i), keys.Canary(instance+":"+strconv.Itoa(i))))
	}
	notYet := fmt.Errorf("%w: not checked yet", errRedisDown)
	b.redisErr.Store(&notYet)
	rdb.AddHook(oneDialHook{})
	return b
}

// connFor is the connection a job's subscription rides on. It is the one
// place that decides it (Redis Cluster's sharded pub/sub will pick by slot).
func (b *redisBroker) connFor(job string) *psConn {
	return b.conns[maphash.String(b.seed, job)%uint64(len(b.conns))]
}

func (b *redisBroker) subscribe(job string)   { b.connFor(job).want(job, b.keys.Live(job), true) }
func (b *redisBroker) unsubscribe(job string) { b.connFor(job).want(job, b.keys.Live(job), false) }

func (b *redisBroker) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, c := range b.conns {
		wg.Go(func() { c.run(ctx) })
	}
	wg.Go(func() { b.canaryLoop(ctx) })
	wg.Wait()
}

// healthy reports, from the state of the last canary round and of each
// connection, why live events may not be flowing.
func (b *redisBroker) healthy() error {
	if err := *b.redisErr.Load(); err != nil {
		return err
	}
	for _, c := range b.conns {
		if err := c.healthy(); err != nil {
			return err
		}
	}
	return nil
}

// canaryLoop proves, every interval, that each pub/sub connection delivers:
// it publishes to a channel that only that connection listens to. The same
// round trip (with a PING when no connection is up) tells whether Redis
// answers at all, for healthy.
func (b *redisBroker) canaryLoop(ctx context.Context) {
	t := time.NewTicker(b.canaryInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, b.timeout)
		pipe := b.rdb.Pipeline()
		pipe.Ping(cctx)
		for _, c := range b.conns {
			if c.connected.Load() {
				pipe.Publish(cctx, c.canary, "canary")
			}
		}
		_, err := pipe.Exec(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if !b.canaryDone(ctx, t, &b.redisErr, err) {
			return
		}
	}
}

type subState uint8

const (
	stateIdle          subState = iota // not subscribed on the current connection
	stateSubscribing                   // SUBSCRIBE sent, confirmation pending
	stateLive                          // confirmed: messages flow
	stateUnsubscribing                 // UNSUBSCRIBE sent, confirmation pending
)

// A channelSub is one job's channel on a psConn.
type channelSub struct {
	job, channel string
	wanted       bool     // the hub wants it subscribed
	state        subState // on the connection's current Redis connection
}

// A psConn is one pub/sub connection and the channels that ride on it. Each
// job has at most one SUBSCRIBE or UNSUBSCRIBE in flight, so every
// confirmation matches exactly one expected change of state. Each Redis
// connection is used once: when it fails it is closed, and a new one
// subscribes every wanted channel again (go-redis's own reconnect, which
// would subscribe them a second time, is refused by oneDialHook).
type psConn struct {
	env     *psEnv
	rdb     redis.UniversalClient // whose Subscribe (or SSubscribe) it uses
	sharded bool                  // SSUBSCRIBE, one channel per command (see broker_cluster.go)
	name    string                // in logs and errors
	canary  string

	// Sharded only: the commands sent and not yet answered, in order, as
	// Redis answers them in order; a refusal (MOVED) names no channel.
	pending []pendingCmd
	// Sharded only: told when a channel is dropped or refused, to route it
	// again (nil otherwise).
	reroute func()

	// cb is held from deciding a callback to making it, so that the lost
	// that clusterBroker's router tells for a channel it takes off
	// (release), and the new shard's confirmed, come after it. Taken
	// before mu, never with a broker lock held; broker methods do not take
	// it.
	cb sync.Mutex

	mu    sync.Mutex // guards subs and dirty
	subs  map[string]*channelSub
	dirty map[*channelSub]struct{}
	wake  chan struct{} // holds a token while dirty may be non-empty

	connected     atomic.Bool
	everConnected atomic.Bool
	lastCanary    atomic.Int64 // UnixNano of the last proof of delivery
}

// A pendingCmd is a subscribe or unsubscribe of one channel awaiting its
// answer.
type pendingCmd struct {
	channel string
	sub     bool
}

func newPSConn(env *psEnv, rdb redis.UniversalClient, sharded bool, name, canary string) *psConn {
	return &psConn{
		env: env, rdb: rdb, sharded: sharded, name: name, canary: canary,
		subs: map[string]*channelSub{}, dirty: map[*channelSub]struct{}{}, wake: make(chan struct{}, 1),
	}
}

// want records whether the hub wants job subscribed, for the run loop to
// act on.
func (c *psConn) want(job, channel string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.subs[channel]
	if s == nil {
		if !on {
			return
		}
		s = &channelSub{job: job, channel: channel}
		c.subs[channel] = s
	}
	s.wanted = on
	c.markDirtyLocked(s)
}

// release takes job's channel off the connection (it is routed to another
// one) and reports whether its subscription was confirmed here: the caller
// then tells the hub it is lost, before subscribing it elsewhere.
func (c *psConn) release(channel string) (wasLive bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.subs[channel]
	if s == nil {
		return false
	}
	wasLive = s.wanted && s.state == stateLive
	s.wanted = false
	c.markDirtyLocked(s)
	return wasLive
}

// kick subscribes again a wanted channel that Redis dropped or refused.
func (c *psConn) kick(channel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.subs[channel]; s != nil && s.wanted && s.state == stateIdle {
		c.markDirtyLocked(s)
	}
}

func (c *psConn) markDirtyLocked(s *channelSub) {
	c.dirty[s] = struct{}{}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// healthy reports why the connection cannot deliver, or nil.
func (c *psConn) healthy() error {
	if !c.connected.Load() {
		return fmt.Errorf("pub/sub connection %s is down", c.name)
	}
	if age := time.Since(time.Unix(0, c.lastCanary.Load())); age > 3*c.env.canaryInterval {
		return fmt.Errorf("pub/sub connection %s delivered no canary for %v", c.name, age.Round(time.Millisecond))
	}
	return nil
}

// run keeps a pub/sub connection up until ctx ends.
func (c *psConn) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		err := c.serve(ctx)
		c.connected.Store(false)
		c.lost()
		if ctx.Err() != nil {
			return
		}
		if c.reroute != nil {
			c.reroute() // a master that failed may have been replaced
		}
		if errors.Is(err, errServed) {
			backoff = 50 * time.Millisecond // it worked for a while: retry at once
		}
		c.env.metrics.redisErrors.WithLabelValues("pubsub").Inc()
		c.env.log.Warn("pub/sub connection lost; reconnecting", "conn", c.name, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// errRedisDown wraps the error of the last canary round that failed.
var errRedisDown = errors.New("redis")

// errServed wraps the error that ended a connection that had been working.
var errServed = errors.New("connection was up")

// serve uses one Redis connection until it fails or ctx ends; it always
// closes it. Every call on it carries a context that lets it dial once.
func (c *psConn) serve(ctx context.Context) error {
	ctx = withOneDial(ctx)
	var ps *redis.PubSub
	if c.sharded {
		ps = c.rdb.SSubscribe(ctx)
	} else {
		ps = c.rdb.Subscribe(ctx)
	}
	c.mu.Lock()
	c.pending = c.pending[:0]
	c.mu.Unlock()
	dead := make(chan error, 1)
	done := make(chan struct{})
	defer func() {
		_ = ps.Close()
		<-done
	}()
	// The first SUBSCRIBE (which dials) carries the canary and the first
	// batch of channels; the reader starts once the connection exists.
	if err := c.reconcile(ctx, ps, true); err != nil {
		close(done)
		return err
	}
	go func() {
		defer close(done)
		dead <- c.read(ctx, ps)
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-dead:
			if c.connected.Load() {
				return fmt.Errorf("%w: %w", errServed, err)
			}
			return err
		case <-c.wake:
			if err := c.reconcile(ctx, ps, false); err != nil {
				return err
			}
		}
	}
}

// reconcile sends the SUBSCRIBE and UNSUBSCRIBE commands that bring the
// connection in line with what the hub wants, and confirms again the
// channels the hub asked for while they were still subscribed. first adds
// the connection's canary to the first SUBSCRIBE.
func (c *psConn) reconcile(ctx context.Context, ps *redis.PubSub, first bool) error {
	var sub, unsub []string
	var confirm []*channelSub
	if first {
		sub = append(sub, c.canary)
	}
	c.mu.Lock()
	for s := range c.dirty {
		switch {
		case s.wanted && s.state == stateIdle:
			s.state = stateSubscribing
			sub = append(sub, s.channel)
		case s.wanted && s.state == stateLive:
			confirm = append(confirm, s)
		case !s.wanted && s.state == stateLive:
			s.state = stateUnsubscribing
			unsub = append(unsub, s.channel)
		case !s.wanted && s.state == stateIdle:
			delete(c.subs, s.channel)
		}
	}
	clear(c.dirty)
	c.mu.Unlock()
	if len(confirm) > 0 {
		c.confirmAgain(confirm)
	}
	if c.sharded {
		return c.reconcileSharded(ctx, ps, sub, unsub)
	}

	for len(sub) > 0 || len(unsub) > 0 {
		n := min(len(sub), subscribeBatch)
		m := min(len(unsub), subscribeBatch)
		cctx, cancel := context.WithTimeout(ctx, c.env.timeout)
		var err error
		if n > 0 {
			err = ps.Subscribe(cctx, sub[:n]...)
		}
		if err == nil && m > 0 {
			err = ps.Unsubscribe(cctx, unsub[:m]...)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		sub, unsub = sub[n:], unsub[m:]
	}
	return nil
}

// confirmAgain confirms again those of subs that are still wanted and
// subscribed, deciding it under cb.
func (c *psConn) confirmAgain(subs []*channelSub) {
	c.cb.Lock()
	defer c.cb.Unlock()
	var jobs []string
	c.mu.Lock()
	for _, s := range subs {
		if s.wanted && s.state == stateLive && c.subs[s.channel] == s {
			jobs = append(jobs, s.job)
		}
	}
	c.mu.Unlock()
	for _, job := range jobs {
		c.env.ev.confirmed(job)
	}
}

// reconcileSharded sends one SSUBSCRIBE or SUNSUBSCRIBE per channel: each
// job is its own slot, and Redis Cluster refuses a command whose channels
// are in different slots (CROSSSLOT). Each is recorded before it is sent,
// for read to match the answers.
func (c *psConn) reconcileSharded(ctx context.Context, ps *redis.PubSub, sub, unsub []string) error {
	c.mu.Lock()
	for _, ch := range sub {
		c.pending = append(c.pending, pendingCmd{channel: ch, sub: true})
	}
	for _, ch := range unsub {
		c.pending = append(c.pending, pendingCmd{channel: ch})
	}
	c.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, c.env.timeout)
	defer cancel()
	for _, ch := range sub {
		if err := ps.SSubscribe(cctx, ch); err != nil {
			return fmt.Errorf("ssubscribe: %w", err)
		}
	}
	for _, ch := range unsub {
		if err := ps.SUnsubscribe(cctx, ch); err != nil {
			return fmt.Errorf("sunsubscribe: %w", err)
		}
	}
	return nil
}

// read receives from the connection until it fails. A connection that
// carries nothing, not even the canary, for three intervals is wedged.
func (c *psConn) read(ctx context.Context, ps *redis.PubSub) error {
	timeout := 3 * c.env.canaryInterval
	for {
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		var re redis.Error
		if err != nil && c.sharded && errors.As(err, &re) {
			// Redis refused one command (MOVED: the slot is elsewhere
			// now); the connection itself is fine.
			if err := c.refused(re); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("nothing received for %v, not even the canary: %w", timeout, err)
			}
			return err
		}
		switch m := msg.(type) {
		case *redis.Message:
			c.deliver(m)
		case *redis.Subscription:
			if err := c.confirmed(m); err != nil {
				return err
			}
		}
	}
}

func (c *psConn) deliver(m *redis.Message) {
	if m.Channel == c.canary {
		c.lastCanary.Store(time.Now().UnixNano())
		return
	}
	c.cb.Lock()
	defer c.cb.Unlock()
	c.mu.Lock()
	s := c.subs[m.Channel]
	live := s != nil && s.wanted && s.state == stateLive
	c.mu.Unlock()
	if live {
		c.env.ev.delivered(s.job, m.Payload)
	}
}

// confirmed applies a subscribe or unsubscribe confirmation. One that no
// channel expects means the connection is not in the state we think: it is
// dropped.
func (c *psConn) confirmed(m *redis.Subscription) error {
	kind := m.Kind
	switch kind {
	case "ssubscribe", "sunsubscribe": // the sharded forms
		kind = kind[1:]
	}
	if c.sharded {
		c.mu.Lock()
		answer := len(c.pending) > 0 && c.pending[0].channel == m.Channel && c.pending[0].sub == (kind == "subscribe")
		if answer {
			c.pending = c.pending[1:]
		}
		c.mu.Unlock()
		if !answer && kind == "unsubscribe" {
			return c.dropped(m.Channel)
		}
	}
	if m.Channel == c.canary {
		if kind == "subscribe" {
			// Subscribed, but not yet proven to deliver: only a canary
			// message counts as that, so ask for one now.
			c.connected.Store(true)
			if c.everConnected.Swap(true) {
				c.env.metrics.redisReconnects.Inc()
			}
			select {
			case c.env.canaryNow <- struct{}{}:
			default:
			}
		}
		return nil
	}
	c.cb.Lock()
	defer c.cb.Unlock()
	c.mu.Lock()
	s := c.subs[m.Channel]
	confirm := false
	switch kind {
	case "subscribe":
		if s == nil || s.state != stateSubscribing {
			c.mu.Unlock()
			return fmt.Errorf("unexpected subscribe confirmation for %q", m.Channel)
		}
		s.state = stateLive
		if s.wanted {
			confirm = true
		} else {
			c.markDirtyLocked(s)
		}
	case "unsubscribe":
		if c.sharded && (s == nil || s.state == stateIdle) {
			c.mu.Unlock() // the server dropped it first (a slot moved): nothing left to do
			return nil
		}
		if s == nil || s.state != stateUnsubscribing {
			c.mu.Unlock()
			return fmt.Errorf("unexpected unsubscribe confirmation for %q", m.Channel)
		}
		s.state = stateIdle
		if s.wanted {
			c.markDirtyLocked(s) // wanted again meanwhile: subscribe again
		} else {
			delete(c.subs, m.Channel)
		}
	}
	c.mu.Unlock()
	if confirm {
		c.env.ev.confirmed(s.job)
	}
	return nil
}

// dropped handles a SUNSUBSCRIBE that Redis sent by itself: it does so for
// the channels of a slot that moved to another master (a migration or a
// failover). The job's subscription is lost (the hub refills the gap once it
// is back) and the broker routes the channel again.
func (c *psConn) dropped(channel string) error {
	if channel == c.canary {
		return errors.New("redis dropped the canary's subscription (its slot moved)")
	}
	c.cb.Lock()
	defer c.cb.Unlock()
	c.mu.Lock()
	s := c.subs[channel]
	if s == nil || s.state == stateIdle {
		c.mu.Unlock()
		return nil
	}
	wasLive := s.state == stateLive && s.wanted
	s.state = stateIdle
	if !s.wanted {
		delete(c.subs, channel)
		delete(c.dirty, s)
	}
	c.mu.Unlock()
	c.env.log.Debug("redis dropped a sharded subscription; routing it again", "conn", c.name, "channel", channel)
	if wasLive {
		c.env.ev.lost(s.job)
	}
	c.reroute()
	return nil
}

// refused handles an error answer to the oldest command in flight (Redis
// answers in order): a channel it refused to subscribe (MOVED) is routed
// again. A refused canary ends the connection, for the broker to pick a
// canary on this master's slots.
//
// A MOVED for another slot than that command's (or with none in flight)
// answers a SUNSUBSCRIBE whose place the push Redis sends when a slot moves
// took: the push came first (Redis drops the slot's channels, then refuses
// commands on it) and, for the same channel, looks just like the answer.
func (c *psConn) refused(re redis.Error) error {
	c.mu.Lock()
	var slot int
	if _, err := fmt.Sscanf(re.Error(), "MOVED %d", &slot); err == nil &&
		(len(c.pending) == 0 || protocol.Slot(c.pending[0].channel) != slot) {
		c.mu.Unlock()
		return nil
	}
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return fmt.Errorf("an error answer with no command in flight: %w", re)
	}
	p := c.pending[0]
	c.pending = c.pending[1:]
	if p.channel == c.canary {
		c.mu.Unlock()
		return fmt.Errorf("canary subscription refused: %w", re)
	}
	s := c.subs[p.channel]
	if s != nil {
		s.state = stateIdle
		if !s.wanted {
			delete(c.subs, p.channel)
			delete(c.dirty, s)
		}
	}
	c.mu.Unlock()
	c.env.log.Debug("redis refused a sharded (un)subscribe; routing it again", "conn", c.name, "channel", p.channel, "err", re)
	c.reroute()
	return nil
}

// lost marks every channel of a failed connection for a new subscription
// and tells the hub which live subscriptions it lost.
func (c *psConn) lost() {
	var lost []string
	c.cb.Lock()
	defer c.cb.Unlock()
	c.mu.Lock()
	for ch, s := range c.subs {
		if s.state == stateLive && s.wanted {
			lost = append(lost, s.job)
		}
		s.state = stateIdle
		if !s.wanted {
			delete(c.subs, ch)
			delete(c.dirty, s)
			continue
		}
		c.dirty[s] = struct{}{}
	}
	c.mu.Unlock()
	for _, job := range lost {
		c.env.ev.lost(job)
	}
}

// oneDialHook lets a pub/sub connection dial Redis once. go-redis's PubSub
// reconnects by itself when a read fails and subscribes all its channels
// again on the new connection; the psConn then replaces the PubSub and
// subscribes them once more. The hook refuses that second dial, so each
// channel is subscribed once per reconnect, by the psConn (which Redis
// Cluster's sharded pub/sub needs: one slot per SSUBSCRIBE). Dials without
// a dialGate in their context (every other use of the client) pass.
type oneDialHook struct{}

// A dialGate lets one dial through. A client shared by several gateways
// carries one oneDialHook per gateway; passing lets the dial that the
// outermost of them admitted through the others. A PubSub dials under its
// own lock, so one gate never sees two dials at once.
type dialGate struct {
	used, passing atomic.Bool
}

type dialGateKey struct{}

var errRedialRefused = errors.New("gateway: pub/sub connection is replaced, not redialled")

// withOneDial returns ctx with a dialGate for oneDialHook.
func withOneDial(ctx context.Context) context.Context {
	return context.WithValue(ctx, dialGateKey{}, new(dialGate))
}

func (oneDialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		g, ok := ctx.Value(dialGateKey{}).(*dialGate)
		if !ok || g.passing.Load() {
			return next(ctx, network, addr)
		}
		if g.used.Swap(true) {
			return nil, errRedialRefused
		}
		g.passing.Store(true)
		defer g.passing.Store(false)
		return next(ctx, network, addr)
	}
}

func (oneDialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (oneDialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
