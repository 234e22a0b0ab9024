package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// A bench is one run: the clients, the publishers and what they measured.
// The client goroutines share it through atomics and sharded histograms;
// each owns its own clientState.
type bench struct {
	cfg    *config
	log    io.Writer // progress and warnings
	tokens []string  // by job, with --jwt-secret-env
	http   *http.Client

	st          []clientState
	mid         []protocol.ID // per job, the resume point (with --resume-from-middle)
	replayCount uint64        // events each resuming client must replay

	lat       *histogram // publish -> parsed, events published in the window
	connHist  *histogram // request -> first event, per client
	delivered []counter  // counted progress events, sharded by client
	// measureFrom is the Unix-nanosecond start of the measured window:
	// events stamped earlier are checked but not timed.
	measureFrom atomic.Int64

	connectStart  time.Time
	connected     atomic.Int64
	failed        atomic.Int64
	finished      atomic.Int64
	replayed      atomic.Int64
	reconnects    atomic.Int64
	refused       atomic.Int64
	connectErrors atomic.Int64
	lastConnected atomic.Int64 // ns after connectStart
	lastReplayed  atomic.Int64

	errs  errorSample
	phase atomic.Pointer[string]
	pubs  *publishers
}

func newBench(cfg *config, log io.Writer) *bench {
	shards := 4 * runtime.GOMAXPROCS(0)
	b := &bench{
		cfg: cfg, log: log,
		st:        make([]clientState, cfg.clients),
		lat:       newHistogram(shards),
		connHist:  newHistogram(shards),
		delivered: make([]counter, shards),
	}
	b.measureFrom.Store(math.MaxInt64)
	b.setPhase("setup")
	return b
}

func (b *bench) setPhase(p string) { b.phase.Store(&p) }

func (b *bench) warn(format string, a ...any) {
	fmt.Fprintf(b.log, "ssebench: "+format+"\n", a...)
}

// samples are the readings taken at the phase boundaries: the server, this
// process's CPU seconds, and Redis.
type samples struct {
	empty, idle0, idle1, load0, load1 procSample
	selfEmpty, selfIdle0, selfIdle1   float64
	redisEmpty, redisConnected        redisSnap
	redisLoad0, redisLoad1            redisSnap
}

// run runs the whole benchmark and returns its result. An error means the
// run could not be carried out at all. Phases: register the jobs (and
// publish their history), connect every client, hold the streams idle,
// publish (warmup, then the measured window), end the jobs and wait for the
// clients to get everything, then compare and compute.
func (b *bench) run(ctx context.Context) (*Result, error) {
	cfg := b.cfg
	res := &Result{
		Tool: "ssebench", Mode: "gateway", Label: cfg.label, Start: time.Now().UTC(),
		Clients: cfg.clients, Jobs: cfg.jobs, Gateways: len(cfg.gateways), TargetRate: cfg.rate,
		DurationS: cfg.duration.Seconds(), Payload: cfg.payload,
		ResumeFromMiddle: cfg.resumeFromMiddle, Idle: cfg.idle, Cores: runtime.NumCPU(),
	}
	if cfg.loadWindow() {
		res.WarmupS = cfg.warmup.Seconds()
	}
	b.checkLimits(res)
	if err := b.mintTokens(); err != nil {
		return nil, err
	}
	tgt, sampler, rdb, err := b.setup(res)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	b.http = newHTTPClient(cfg.clients)
	defer b.http.CloseIdleConnections()
	b.pubs = newPublishers(tgt, cfg.jobs, cfg.publishers, &b.errs)
	stopProgress := b.startProgress()
	defer stopProgress()

	b.setPhase("register")
	if err := forEachJob(cfg.jobs, cfg.publishers, func(j int) error { return tgt.register(ctx, j) }); err != nil {
		return nil, fmt.Errorf("register jobs: %w", err)
	}
	if n := cfg.resumeFromMiddle; n > 0 {
		b.setPhase("history")
		if err := b.prepublish(ctx, tgt, n); err != nil {
			return nil, fmt.Errorf("publish history: %w", err)
		}
		if err := tgt.sync(ctx); err != nil {
			return nil, fmt.Errorf("publish history: %w", err)
		}
	}
	res.EventBytes = b.eventBytes()

	var sm samples
	sm.empty, sm.selfEmpty, sm.redisEmpty = sampler.sample(ctx), selfCPU(), snapRedis(ctx, rdb)
	// Clients outlive an interrupt until their jobs' terminal events
	// reach them (or the short drain after one passes).
	clientCtx, stopClients := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClients()
	clients := b.connect(ctx, clientCtx, res)
	sm.redisConnected = snapRedis(ctx, rdb)

	// Idle: every stream open, nothing published. Its first sample also
	// closes the connect phase.
	idleLen := cfg.settle
	if !cfg.loadWindow() && cfg.duration > 0 {
		idleLen = cfg.duration // --idle, or nothing to publish: hold the streams
	}
	b.setPhase("idle")
	sm.idle0, sm.selfIdle0 = sampler.sample(ctx), selfCPU()
	sleepCtx(ctx, idleLen)
	sm.idle1, sm.selfIdle1 = sampler.sample(ctx), selfCPU()
	sm.load0, sm.load1 = sm.idle1, sm.idle1

	if cfg.loadWindow() && ctx.Err() == nil {
		b.load(ctx, res, sampler, rdb, &sm)
	}
	res.Publish.Total = b.pubs.published.Load()
	res.Publish.Errors = b.pubs.errors.Load()

	b.setPhase("drain")
	b.drain(ctx, tgt, res)
	stopClients()
	clients.Wait()
	stopProgress()

	b.serverResult(res, &sm)
	b.selfResult(res, &sm)
	b.redisResult(res, &sm)
	b.latencyResult(res)
	b.correctness(res)
	res.Errors = append(res.Errors, b.errs.list()...)
	if ctx.Err() != nil {
		res.Errors = append(res.Errors, "interrupted")
	}
	k := res.Correctness
	res.OK = k.Lost == 0 && k.Duplicated == 0 && k.OutOfOrder == 0 && k.Extra == 0 && k.Mismatched == 0 &&
		k.Unfinished == 0 && res.Connect.Connected == cfg.clients && res.Publish.Errors == 0 && ctx.Err() == nil
	roundFloats(reflect.ValueOf(res))
	return res, nil
}

// checkLimits raises this process's open-file limit and notes the limits
// that would stop the clients from connecting.
func (b *bench) checkLimits(res *Result) {
	nofile, err := raiseNoFile()
	res.NoFileLimit = nofile
	if err != nil {
		b.warn("raising the open-file limit: %v", err)
	}
	n := b.cfg.clients
	if nofile < uint64(n)+64 {
		res.Errors = append(res.Errors, fmt.Sprintf("open-file limit %d is below --clients %d: raise the hard limit (ulimit -Hn) first", nofile, n))
	}
	per := n / len(b.cfg.gateways)
	if b.cfg.floor {
		per = n
	}
	if ports := localPorts(); ports > 0 && per > ports {
		res.Errors = append(res.Errors, fmt.Sprintf("%d clients per server address exceed the %d local ports (net.ipv4.ip_local_port_range): use more --gateway addresses", per, ports))
	}
}

// setup starts the target (the publisher library on Redis, or the floor
// server) and the sampler of the server under test.
func (b *bench) setup(res *Result) (target, *serverSampler, redis.UniversalClient, error) {
	cfg := b.cfg
	sampler := &serverSampler{client: &http.Client{Timeout: 5 * time.Second}}
	var tgt target
	var rdb redis.UniversalClient
	if cfg.floor {
		ft, err := startFloor(cfg, b.log)
		if err != nil {
			return nil, nil, nil, err
		}
		tgt = ft
		res.Mode, res.Gateways = "floor", 1
		cfg.gateways = []string{"http://" + ft.addr}
		sampler.pids = []int{ft.pid()}
	} else {
		rt, err := newRedisTarget(cfg)
		if err != nil {
			return nil, nil, nil, err
		}
		tgt, rdb = rt, rt.rdb
		sampler.pids, sampler.urls, sampler.metrics = cfg.gatewayPIDs, cfg.gateways, true
	}
	res.Server.Source = sampler.source()
	res.Server.OpenFileLimitSoft = -1
	if len(sampler.pids) > 0 {
		if n, err := openFileLimit(sampler.pids[0]); err == nil {
			res.Server.OpenFileLimitSoft = int64(min(n, math.MaxInt64))
			if per := uint64(cfg.clients / len(sampler.pids)); n < per+64 {
				res.Errors = append(res.Errors, fmt.Sprintf("the server's open-file limit %d is below its %d clients", n, per))
			}
		}
	}
	return tgt, sampler, rdb, nil
}

// connect starts every client (at --connect-rate, or all at once) and waits
// until each has its first event (and its whole replay) or gave up, or
// --connect-timeout passes. The returned group ends with the clients.
func (b *bench) connect(ctx, clientCtx context.Context, res *Result) *sync.WaitGroup {
	cfg := b.cfg
	b.setPhase("connect")
	var clients sync.WaitGroup
	b.connectStart = time.Now()
	launched := make(chan struct{})
	go func() {
		defer close(launched)
		for i := range cfg.clients {
			if cfg.connectRate > 0 {
				at := b.connectStart.Add(time.Duration(float64(i) / cfg.connectRate * float64(time.Second)))
				if d := time.Until(at); d > 0 && !sleepCtx(ctx, d) {
					return
				}
			}
			if ctx.Err() != nil {
				return
			}
			clients.Go(func() { b.runClient(clientCtx, i) })
		}
	}()
	res.Connect.TimedOut = !b.waitFor(ctx, cfg.connectTimeout, func() bool {
		return b.connected.Load()+b.failed.Load() >= int64(cfg.clients) &&
			(b.replayCount == 0 || b.replayed.Load()+b.failed.Load() >= int64(cfg.clients))
	})
	<-launched
	b.connectResult(res, time.Since(b.connectStart))
	return &clients
}

// load publishes at --rate: --warmup first, then the measured window, whose
// boundaries are sampled.
func (b *bench) load(ctx context.Context, res *Result, sampler *serverSampler, rdb redis.UniversalClient, sm *samples) {
	cfg := b.cfg
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	b.pubs.start(pubCtx)
	stop := make(chan struct{})
	paced := make(chan struct{})
	go func() {
		defer close(paced)
		pace(pubCtx, b.pubs, cfg.jobs, cfg.rate, stop)
	}()
	b.setPhase("warmup")
	sleepCtx(ctx, cfg.warmup)

	b.setPhase("load")
	t0 := time.Now()
	b.measureFrom.Store(t0.UnixNano())
	d0, p0, s0, m0 := sumCounters(b.delivered), b.pubs.published.Load(), selfCPU(), machineCPU()
	sm.load0, sm.redisLoad0 = sampler.sample(ctx), snapRedis(ctx, rdb)
	sleepCtx(ctx, cfg.duration)
	close(stop)
	<-paced
	b.pubs.stop()
	t1 := time.Now()
	d1, p1, s1, m1 := sumCounters(b.delivered), b.pubs.published.Load(), selfCPU(), machineCPU()
	sm.load1, sm.redisLoad1 = sampler.sample(ctx), snapRedis(ctx, rdb)

	window := t1.Sub(t0).Seconds()
	res.Publish.WindowS = window
	res.Publish.Events = p1 - p0
	res.Publish.Rate = float64(p1-p0) / window
	res.Publish.PerJobHz = res.Publish.Rate / float64(cfg.jobs)
	res.Delivery.Deliveries = d1 - d0
	res.Delivery.PerSec = float64(d1-d0) / window
	res.Delivery.Expected = (p1 - p0) * int64(cfg.clients) / int64(cfg.jobs)
	res.Self.LoadCPUPct = pct(s1-s0, window)
	res.Self.Saturated = res.Self.LoadCPUPct > 90*float64(runtime.NumCPU())
	res.Machine.LoadBusyPct = busyPct(m0, m1)
}

// drain ends every job, so that each client gets its terminal event after
// everything else, and waits for the clients to finish.
func (b *bench) drain(ctx context.Context, tgt target, res *Result) {
	cfg := b.cfg
	start := time.Now()
	// Even when interrupted, end the jobs: their streams close cleanly.
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := forEachJob(cfg.jobs, cfg.publishers, func(j int) error { return tgt.complete(endCtx, j, b.pubs.expect[j].last) }); err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("completing the jobs: %v", err))
	}
	wait := cfg.drain
	if ctx.Err() != nil {
		wait = min(wait, 2*time.Second) // interrupted: a short, clean end
	}
	b.waitFor(endCtx, wait, func() bool {
		return b.finished.Load()+b.failed.Load() >= int64(cfg.clients)
	})
	res.Delivery.DrainS = time.Since(start).Seconds()
}

// serverResult turns the server samples into memory and CPU figures.
func (b *bench) serverResult(res *Result, sm *samples) {
	s := &res.Server
	conns := float64(res.Connect.Connected)
	s.RSSEmptyMB, s.RSSIdleMB, s.RSSLoadMB, s.GoMemPerConnKB = -1, -1, -1, -1
	if sm.empty.OK {
		s.RSSEmptyMB = sm.empty.RSS / (1 << 20)
	} else if s.Source != "none" {
		res.Errors = append(res.Errors, fmt.Sprintf("could not read the server's CPU and RSS (%s)", s.Source))
	}
	if sm.idle1.OK {
		s.RSSIdleMB = sm.idle1.RSS / (1 << 20)
		if sm.empty.OK && conns > 0 {
			s.RSSPerConnKB = (sm.idle1.RSS - sm.empty.RSS) / 1024 / conns
		}
	}
	if sm.load1.OK {
		s.RSSLoadMB = sm.load1.RSS / (1 << 20)
	}
	if sm.empty.Scraped && sm.idle1.Scraped && conns > 0 {
		s.GoMemPerConnKB = (sm.idle1.GoMem - sm.empty.GoMem) / 1024 / conns
	}
	if sm.empty.Scraped && sm.load1.Scraped {
		s.SlowDisconnects = sm.load1.Slow - sm.empty.Slow
	}
	if sm.empty.OK && sm.idle0.OK && conns > 0 {
		s.ConnectCPUS = sm.idle0.CPU - sm.empty.CPU
		s.ConnectCPUPerConnMs = 1000 * s.ConnectCPUS / conns
	}
	s.IdleWindowS = sm.idle1.At.Sub(sm.idle0.At).Seconds()
	if sm.idle0.OK && sm.idle1.OK && s.IdleWindowS > 0 {
		s.IdleCPUPct = pct(sm.idle1.CPU-sm.idle0.CPU, s.IdleWindowS)
	}
	if res.Publish.WindowS > 0 && sm.load0.OK && sm.load1.OK {
		s.LoadCPUS = sm.load1.CPU - sm.load0.CPU
		s.LoadCPUPct = pct(s.LoadCPUS, sm.load1.At.Sub(sm.load0.At).Seconds())
		if res.Delivery.Deliveries > 0 {
			s.CPUPer100kS = s.LoadCPUS / float64(res.Delivery.Deliveries) * 1e5
		}
	}
}

// selfResult fills in ssebench's own CPU and memory.
func (b *bench) selfResult(res *Result, sm *samples) {
	res.Self.CPUS = selfCPU()
	res.Self.ConnectCPUS = sm.selfIdle0 - sm.selfEmpty
	if w := sm.idle1.At.Sub(sm.idle0.At).Seconds(); w > 0 {
		res.Self.IdleCPUPct = pct(sm.selfIdle1-sm.selfIdle0, w)
	}
	if v, err := statusField(0, "VmRSS:"); err == nil {
		res.Self.RSSMB = v / 1024
	}
	if v, err := statusField(0, "VmHWM:"); err == nil {
		res.Self.PeakRSSMB = v / 1024
	}
	if res.Self.Saturated {
		res.Errors = append(res.Errors, fmt.Sprintf("ssebench used %.0f%% CPU of %d cores in the load window: the load generator, not the server, may be the limit",
			res.Self.LoadCPUPct, runtime.NumCPU()))
	}
}

// redisResult fills in Redis's work: the connect phase and the measured
// window, calls per published event.
func (b *bench) redisResult(res *Result, sm *samples) {
	if !sm.redisEmpty.OK || !sm.redisConnected.OK {
		return
	}
	res.Redis = &RedisResult{
		ConnectCPUS: sm.redisConnected.CPU - sm.redisEmpty.CPU,
		Connect:     redisDelta(sm.redisEmpty, sm.redisConnected, 0),
	}
	if sm.redisLoad0.OK && sm.redisLoad1.OK {
		res.Redis.LoadCPUS = sm.redisLoad1.CPU - sm.redisLoad0.CPU
		res.Redis.Load = redisDelta(sm.redisLoad0, sm.redisLoad1, float64(res.Publish.Events))
	}
	res.Redis.Shards = shardDeltas(sm, float64(res.Publish.Events))
}

// prepublish publishes n events per job for clients to resume from the
// middle of, and sets what each client must replay: the second half.
func (b *bench) prepublish(ctx context.Context, tgt target, n int) error {
	b.mid = make([]protocol.ID, b.cfg.jobs)
	b.replayCount = uint64(n - n/2)
	return forEachJob(b.cfg.jobs, b.cfg.publishers, func(j int) error {
		e := &b.pubs.expect[j]
		for k := 1; k <= n; k++ {
			id, err := tgt.progress(ctx, j, k, true)
			if err != nil {
				return err
			}
			e.last = k
			if k == n/2 {
				b.mid[j] = id
			}
			if k > n/2 {
				e.count++
				e.hash += idHash(id)
			}
		}
		b.pubs.published.Add(int64(n))
		return nil
	})
}

// eventBytes is about the size of one progress event on the wire.
func (b *bench) eventBytes() int {
	pad := padding(b.cfg.jobName(b.cfg.jobs-1), b.cfg.payload)
	now := time.Now()
	data := progressData(b.cfg.jobName(b.cfg.jobs-1), 1, stepName(now, pad), now)
	m := event.Message{ID: protocol.ID{Ms: uint64(now.UnixMilli()), Seq: 0}.String(), Event: string(event.TypeProgress), Data: data}
	w, _ := m.Bytes()
	return len(w)
}

// waitFor polls done until it holds, d passes or ctx ends; it reports
// whether done held.
func (b *bench) waitFor(ctx context.Context, d time.Duration, done func() bool) bool {
	deadline := time.Now().Add(d)
	for !done() {
		if time.Now().After(deadline) || !sleepCtx(ctx, 5*time.Millisecond) {
			return done()
		}
	}
	return true
}

func (b *bench) connectResult(res *Result, wall time.Duration) {
	c := &res.Connect
	c.Connected = int(b.connected.Load())
	c.Failed = int(b.failed.Load())
	c.Unconnected = b.cfg.clients - c.Connected - c.Failed
	c.Errors = b.connectErrors.Load()
	c.Refused = b.refused.Load()
	c.AllS = time.Duration(b.lastConnected.Load()).Seconds()
	if c.Unconnected > 0 {
		c.AllS = wall.Seconds()
	}
	c.RateAsked = b.cfg.connectRate
	if c.AllS > 0 {
		c.RateAchieved = float64(c.Connected) / c.AllS
	}
	h := b.connHist.snapshot()
	c.P50Ms, c.P99Ms, c.MaxMs = ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(time.Duration(h.max))
	if b.replayCount > 0 {
		c.ReplayEvents = b.replayCount
		c.Replayed = int(b.replayed.Load())
		c.ReplayAllS = time.Duration(b.lastReplayed.Load()).Seconds()
	}
	if c.Unconnected > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d clients not connected after %v", c.Unconnected, b.cfg.connectTimeout))
	}
	if c.Failed > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d clients failed", c.Failed))
	}
}

func (b *bench) latencyResult(res *Result) {
	h := b.lat.snapshot()
	res.Latency = LatencyResult{
		Count: h.n, P50Ms: ms(h.quantile(0.5)), P90Ms: ms(h.quantile(0.9)), P99Ms: ms(h.quantile(0.99)),
		P999Ms: ms(h.quantile(0.999)), MaxMs: ms(time.Duration(h.max)), MeanMs: ms(h.mean()),
	}
}

// correctness compares each client's count and ID hash with its job's.
func (b *bench) correctness(res *Result) {
	k := &res.Correctness
	perJob := make([]JobErrors, b.cfg.jobs)
	for i := range b.st {
		st := &b.st[i]
		j := i % b.cfg.jobs
		e := b.pubs.expect[j]
		je := &perJob[j]
		k.Expected += e.count
		k.Received += st.accepted
		k.Duplicated += uint64(st.dups)
		k.OutOfOrder += uint64(st.ooo)
		k.Resets += uint64(st.resets)
		k.Foreign += uint64(st.foreign)
		res.Connect.ReconnectsMax = max(res.Connect.ReconnectsMax, st.reconnects)
		je.Duplicated += uint64(st.dups)
		je.OutOfOrder += uint64(st.ooo)
		if !st.finished && !st.failed {
			k.Unfinished++
		}
		if st.failed {
			continue // counted as failed; its events are not "lost"
		}
		// An out-of-order event was received, just not in order: it is
		// not also lost.
		got := st.accepted + uint64(st.ooo)
		switch {
		case got < e.count:
			je.Lost += e.count - got
		case st.accepted > e.count:
			je.Extra += st.accepted - e.count
		case st.accepted == e.count && st.hash != e.hash:
			je.Mismatched++
		}
	}
	for j, je := range perJob {
		k.Lost += je.Lost
		k.Extra += je.Extra
		k.Mismatched += je.Mismatched
		if (je.Lost|je.Duplicated|je.OutOfOrder|je.Extra|je.Mismatched) != 0 && len(k.Jobs) < 20 {
			je.Job = b.cfg.jobName(j)
			k.Jobs = append(k.Jobs, je)
		}
	}
	res.Connect.Reconnects = b.reconnects.Load()
}

func pct(cpu, wall float64) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * cpu / wall
}

// startProgress prints a live progress line every cfg.progress until the
// returned function is called (which is idempotent).
func (b *bench) startProgress() func() {
	if b.cfg.progress <= 0 {
		return func() {}
	}
	tty := isTerminal(b.log)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(b.cfg.progress)
		defer t.Stop()
		start := time.Now()
		lastAt, lastD, lastP, lastCPU := start, int64(0), int64(0), selfCPU()
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(b.log, "\r\033[K")
				}
				return
			case now := <-t.C:
				d, p, cpu := sumCounters(b.delivered), b.pubs.published.Load(), selfCPU()
				dt := now.Sub(lastAt).Seconds()
				h := b.lat.snapshot()
				line := fmt.Sprintf("[%5.1fs %-8s] clients %d/%d (finished %d)  published %d (%.0f/s)  deliveries %.0f/s  latency p50 %.2fms p99 %.2fms max %.1fms  ssebench cpu %.0f%%",
					now.Sub(start).Seconds(), *b.phase.Load(), b.connected.Load(), b.cfg.clients, b.finished.Load(),
					p, float64(p-lastP)/dt, float64(d-lastD)/dt, ms(h.quantile(0.5)), ms(h.quantile(0.99)),
					ms(time.Duration(h.max)), pct(cpu-lastCPU, dt))
				if tty {
					fmt.Fprint(b.log, "\r\033[K"+line)
				} else {
					fmt.Fprintln(b.log, line)
				}
				lastAt, lastD, lastP, lastCPU = now, d, p, cpu
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-stopped
		})
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
