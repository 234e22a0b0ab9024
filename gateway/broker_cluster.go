package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// clusterBroker is the broker on Redis Cluster sharded pub/sub (SSUBSCRIBE,
// Redis 7+). A job's live channel is in its job's slot, so it can be read
// only on the master that owns that slot: the broker keeps one pub/sub
// connection per master (a shard), each carrying the channels of that
// master's slots and a canary channel of its own in one of them.
//
// The slot map is read with CLUSTER SHARDS at start, every CanaryInterval,
// and at once when a shard's connection fails, Redis drops a subscription
// by itself (it sends SUNSUBSCRIBE for the channels of a slot that moved
// to another master) or refuses one (MOVED). A job whose slot moved is
// taken off its old shard (its subscription counts as lost, so the hub
// refills the gap from the stream once it is confirmed on the new shard)
// and subscribed on the new owner.
//
// Concurrency: subscribe and unsubscribe (the hub's goroutines) and the
// router (run's goroutine) share the routes under mu; each psConn guards
// its own channels. Lock order: mu, then a psConn's mu. Hub callbacks are
// made with neither held.
type clusterBroker struct {
	psEnv
	cc       *redis.ClusterClient
	keys     protocol.Keys
	instance string

	redisErr   atomic.Pointer[error]
	refreshNow chan struct{} // holds a token while a route refresh is asked for

	mu     sync.Mutex
	slots  []string           // slot → master address; nil until the slot map is first read
	shards map[string]*shard  // by master address
	jobs   map[string]*psConn // every wanted job: its shard's connection, nil while it waits for one
	moving map[string]bool    // jobs taken off their shard whose loss the hub is being told of
	runCtx context.Context    // run's, for the shards it starts
	wg     sync.WaitGroup     // the shards' goroutines
	seq    int                // names shard connections
}

// A shard is the pub/sub connection to one master.
type shard struct {
	addr   string
	client *redis.Client
	conn   *psConn
	stop   context.CancelFunc
	done   chan struct{} // closed when conn's run has returned
}

var _ broker = (*clusterBroker)(nil)

func newClusterBroker(cc *redis.ClusterClient, cfg Config, keys protocol.Keys, ev brokerEvents, m *metrics, instance string) *clusterBroker {
	b := &clusterBroker{
		psEnv: newPSEnv(cfg, ev, m), cc: cc, keys: keys, instance: instance,
		refreshNow: make(chan struct{}, 1),
		shards:     map[string]*shard{}, jobs: map[string]*psConn{}, moving: map[string]bool{},
	}
	notYet := fmt.Errorf("%w: not checked yet", errRedisDown)
	b.redisErr.Store(&notYet)
	return b
}

func (b *clusterBroker) subscribe(job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// A job that is moving waits too, even if dropped and asked for again
	// meanwhile: its new shard's confirmed must follow the lost the router
	// is telling.
	if c, ok := b.jobs[job]; ok || b.slots == nil || b.moving[job] {
		if c != nil {
			c.want(job, b.keys.Live(job), true)
			return
		}
		b.jobs[job] = nil // the router routes it
		b.askRefresh()
		return
	}
	c := b.routeLocked(job)
	b.jobs[job] = c
	if c == nil {
		b.askRefresh() // its master has no shard yet
		return
	}
	c.want(job, b.keys.Live(job), true)
}

func (b *clusterBroker) unsubscribe(job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.jobs[job]
	if !ok {
		return
	}
	delete(b.jobs, job)
	if c != nil {
		c.want(job, b.keys.Live(job), false)
	}
}

// routeLocked is the connection of the shard that owns job's slot, or nil
// if that master has no shard yet.
func (b *clusterBroker) routeLocked(job string) *psConn {
	if sh := b.shards[b.slots[protocol.Slot(job)]]; sh != nil {
		return sh.conn
	}
	return nil
}

func (b *clusterBroker) askRefresh() {
	select {
	case b.refreshNow <- struct{}{}:
	default:
	}
}

func (b *clusterBroker) run(ctx context.Context) {
	b.mu.Lock()
	b.runCtx = ctx
	b.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { b.canaryLoop(ctx) })
	t := time.NewTicker(b.canaryInterval)
	for ctx.Err() == nil {
		b.refresh(ctx)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-b.refreshNow:
			// Coalesce a burst (a slot's channels dropped one by one).
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	t.Stop()
	wg.Wait()
	b.wg.Wait() // the shards stop with ctx
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, sh := range b.shards {
		_ = sh.client.Close()
	}
}

// refresh reads the slot map and routes every wanted job by it: a job on
// the wrong shard is taken off it (lost, if it was confirmed there), then
// every job that waits is subscribed on its shard.
func (b *clusterBroker) refresh(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	shards, err := b.cc.ClusterShards(cctx).Result()
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			b.metrics.redisErrors.WithLabelValues("cluster_shards").Inc()
			b.log.Warn("reading the cluster's slot map failed; keeping the last one", "err", err)
		}
		return
	}
	slots := make([]string, protocol.SlotCount)
	tls := b.cc.Options().TLSConfig != nil
	for _, sh := range shards {
		addr := masterAddr(sh.Nodes, tls)
		if addr == "" {
			continue // no master known: its slots wait
		}
		for _, r := range sh.Slots {
			for s := max(int(r.Start), 0); s <= min(int(r.End), protocol.SlotCount-1); s++ {
				slots[s] = addr
			}
		}
	}

	left := map[*psConn][]string{} // jobs taken off each connection: those lost there
	b.mu.Lock()
	if b.slots != nil && !slices.Equal(b.slots, slots) {
		// The cluster client (the gateway's reads and publishes, the
		// canary's PING) learns of a move by MOVED only, of a failover
		// not until its own reload, every minute: tell it now.
		b.cc.ReloadState(ctx)
	}
	b.slots = slots
	replaced := b.ensureShardsLocked(slots)
	for job, c := range b.jobs {
		want := b.routeLocked(job)
		switch {
		case c == nil:
		case c == want:
			c.kick(b.keys.Live(job)) // subscribe again what was dropped or refused
		default:
			lost := left[c]
			if c.release(b.keys.Live(job)) {
				lost = append(lost, job)
			}
			left[c] = lost
			b.jobs[job] = nil
			b.moving[job] = true
		}
	}
	b.mu.Unlock()

	// The hub hears of each loss before the job is subscribed again: it
	// refills the gap when the new shard confirms. The old connection may
	// be telling the hub of a job taken off (a confirmed, a delivered, or
	// the loss it saw first itself): that comes first, so each is waited
	// for, a replaced shard's to its end (not under mu: its callbacks wait
	// for the hub, which may be waiting for mu).
	for _, sh := range replaced {
		<-sh.done
	}
	for c, lost := range left {
		c.cb.Lock()
		for _, job := range lost {
			b.ev.lost(job)
		}
		c.cb.Unlock()
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.moving)
	for job, c := range b.jobs {
		if c != nil {
			continue
		}
		if c = b.routeLocked(job); c != nil {
			b.jobs[job] = c
			c.want(job, b.keys.Live(job), true)
		}
	}
	b.dropIdleShardsLocked(slots)
}

// masterAddr is the address of the shard's online master, else of its
// master that is not online (suspected or marked failed: until a failover
// its slots are still its, and its shard's failing connection is what
// tells healthy so), or "".
func masterAddr(nodes []redis.Node, tls bool) string {
	for _, online := range []bool{true, false} {
		for _, n := range nodes {
			if n.Role != "master" || online && n.Health != "online" {
				continue
			}
			host := cmp.Or(n.Endpoint, n.IP)
			port := n.Port
			if tls && n.TLSPort != 0 {
				port = n.TLSPort
			}
			if host == "" || host == "?" || port == 0 {
				return ""
			}
			return net.JoinHostPort(host, strconv.FormatInt(port, 10))
		}
	}
	return ""
}

// ensureShardsLocked starts a shard for each master that has none, and
// replaces a shard whose canary's slot moved to another master; it returns
// the shards it replaced.
func (b *clusterBroker) ensureShardsLocked(slots []string) (replaced []*shard) {
	owned := map[string][]int{}
	for s, addr := range slots {
		if addr != "" {
			owned[addr] = append(owned[addr], s)
		}
	}
	for addr, mine := range owned {
		sh := b.shards[addr]
		if sh != nil && slots[protocol.Slot(sh.conn.canary)] == addr {
			continue
		}
		if sh != nil {
			b.retireLocked(sh) // its jobs move to the new one below
			replaced = append(replaced, sh)
		}
		if b.runCtx == nil || b.runCtx.Err() != nil {
			continue
		}
		b.seq++
		name := fmt.Sprintf("%s#%d", addr, b.seq)
		client := redis.NewClient(b.nodeOptions(addr))
		client.AddHook(oneDialHook{})
		c := newPSConn(&b.psEnv, client, true, name, b.canaryIn(mine, name))
		c.reroute = b.askRefresh
		ctx, stop := context.WithCancel(b.runCtx)
		sh = &shard{addr: addr, client: client, conn: c, stop: stop, done: make(chan struct{})}
		b.shards[addr] = sh
		b.wg.Go(func() {
			defer close(sh.done)
			c.run(ctx)
		})
	}
	return replaced
}

// dropIdleShardsLocked stops the shards of addresses that are no longer
// masters and carry no job.
func (b *clusterBroker) dropIdleShardsLocked(slots []string) {
	masters := map[string]bool{}
	for _, addr := range slots {
		masters[addr] = true
	}
	busy := map[*psConn]bool{}
	for _, c := range b.jobs {
		busy[c] = true
	}
	for addr, sh := range b.shards {
		if !masters[addr] && !busy[sh.conn] {
			b.retireLocked(sh)
		}
	}
}

// retireLocked stops a shard. Its jobs, if any, are routed again by the
// caller's refresh.
func (b *clusterBroker) retireLocked(sh *shard) {
	delete(b.shards, sh.addr)
	sh.stop()
	b.wg.Go(func() {
		<-sh.done
		_ = sh.client.Close()
	})
}

// canaryIn names a canary channel whose slot is one of slots (a master's),
// with a hash tag found by counting: about one try in three hits a master
// of three.
func (b *clusterBroker) canaryIn(slots []int, name string) string {
	mine := make(map[int]bool, len(slots))
	for _, s := range slots {
		mine[s] = true
	}
	for i := 0; ; i++ {
		ch := b.keys.Canary("{" + b.instance + ":" + name + ":" + strconv.Itoa(i) + "}")
		if mine[protocol.Slot(ch)] || i > 1<<20 {
			return ch
		}
	}
}

// nodeOptions are the options of a client of one master, from the
// cluster client's.
func (b *clusterBroker) nodeOptions(addr string) *redis.Options {
	o := b.cc.Options()
	return &redis.Options{
		Addr: addr, Dialer: o.Dialer, Protocol: o.Protocol, ClientName: o.ClientName,
		Username: o.Username, Password: o.Password, CredentialsProvider: o.CredentialsProvider,
		CredentialsProviderContext: o.CredentialsProviderContext,
		DialTimeout:                o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolTimeout: o.PoolTimeout, ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		MaxRetries: o.MaxRetries, TLSConfig: o.TLSConfig, PoolSize: 2,
	}
}

// healthy: every shard's connection delivers, and the last canary round
// reached every master.
func (b *clusterBroker) healthy() error {
	if err := *b.redisErr.Load(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.slots == nil {
		return fmt.Errorf("%w: the cluster's slot map was not read yet", errRedisDown)
	}
	for _, sh := range b.shards {
		if err := sh.conn.healthy(); err != nil {
			return err
		}
	}
	return nil
}

// canaryLoop proves, every interval, that each shard's connection
// delivers: it publishes, on that master, to the shard's own canary channel.
func (b *clusterBroker) canaryLoop(ctx context.Context) {
	t := time.NewTicker(b.canaryInterval)
	defer t.Stop()
	for {
		b.mu.Lock()
		shards := make([]*shard, 0, len(b.shards))
		for _, sh := range b.shards {
			shards = append(shards, sh)
		}
		b.mu.Unlock()
		// All at once: a master that hangs must not hold back the canaries
		// of the others (their connections would look wedged).
		cctx, cancel := context.WithTimeout(ctx, b.timeout)
		errs := make([]error, len(shards)+1)
		var wg sync.WaitGroup
		wg.Go(func() { errs[0] = b.cc.Ping(cctx).Err() })
		for i, sh := range shards {
			if sh.conn.connected.Load() {
				wg.Go(func() { errs[i+1] = sh.client.SPublish(cctx, sh.conn.canary, "canary").Err() })
			}
		}
		wg.Wait()
		cancel()
		if errs[0] != nil && ctx.Err() == nil {
			b.cc.ReloadState(ctx) // its slot map may still name a master that is gone
		}
		err := errors.Join(errs...)
		if ctx.Err() != nil {
			return
		}
		if !b.canaryDone(ctx, t, &b.redisErr, err) {
			return
		}
	}
}
