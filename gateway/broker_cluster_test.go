package gateway

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

// The cluster broker on a real three-master Redis Cluster, with a recorder
// of its callbacks that plays the hub: it calls subscribe and unsubscribe as
// the hub does (with its own lock held) and takes every callback under that
// lock, checking the brokerEvents contract job by job.

// A jobRecord is what the recorder knows of one job: what it asked for, what
// the hub would believe from the callbacks, and what was delivered.
type jobRecord struct {
	wanted   bool // subscribed and not unsubscribed since (the hub has a jobSub)
	live     bool // the hub's jobSub.live
	lostLive bool // lost while live, not confirmed since: nothing may be delivered
	// credits counts the subscribe calls and the losses that no confirmed
	// has answered yet: a confirmed without one is a second confirmation of
	// a subscription nobody asked again for nor lost. An unsubscribe keeps
	// them: the confirmation of an ask may come after the next ones (the
	// subscription was kept throughout).
	credits int
	last    int64 // the highest sequence number delivered
	// expect is the first sequence number that must be delivered (with
	// every later one) while live: the next one published when the hub
	// took the subscription live. 0: none yet.
	expect int64

	confirms, losts, delivers, strays int
	history                           []string
	pub                               atomic.Int64   // publishes started, for the job's sequence numbers
	failed                            map[int64]bool // publishes that failed: maybe never sent
}

// contractRecorder is the hub stand-in. Hooks run before an event is
// recorded and without the recorder's lock, as a hub callback waiting for a
// busy hub lock would: the tests use them to hold one broker goroutine.
type contractRecorder struct {
	t     *testing.T
	b     broker
	start time.Time

	mu          sync.Mutex
	jobs        map[string]*jobRecord
	onConfirmed func(job string)
	onLost      func(job string)
	onDelivered func(job, payload string)
}

func newContractRecorder(t *testing.T) *contractRecorder {
	return &contractRecorder{t: t, start: time.Now(), jobs: map[string]*jobRecord{}}
}

func (r *contractRecorder) events() brokerEvents {
	return brokerEvents{confirmed: r.confirmed, delivered: r.delivered, lost: r.lost}
}

func (r *contractRecorder) jobLocked(job string) *jobRecord {
	j := r.jobs[job]
	if j == nil {
		j = &jobRecord{}
		r.jobs[job] = j
	}
	return j
}

func (r *contractRecorder) noteLocked(j *jobRecord, format string, args ...any) {
	j.history = append(j.history, fmt.Sprintf("%6.3fs ", time.Since(r.start).Seconds())+fmt.Sprintf(format, args...))
}

func (r *contractRecorder) violationLocked(job string, j *jobRecord, format string, args ...any) {
	r.t.Helper()
	r.t.Errorf("job %s: broker contract violated: %s\n%s", job, fmt.Sprintf(format, args...), strings.Join(tail(j.history, 25), "\n"))
}

func tail(s []string, n int) []string { return s[max(0, len(s)-n):] }

// subscribe and unsubscribe are the hub's calls: only for a job it does not
// have, and only for one it has.
func (r *contractRecorder) subscribe(jobs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, job := range jobs {
		r.subscribeLocked(job)
	}
}

func (r *contractRecorder) subscribeLocked(job string) {
	j := r.jobLocked(job)
	if j.wanted {
		panic("subscribe of a job already subscribed: " + job)
	}
	j.wanted, j.live, j.lostLive, j.expect = true, false, false, 0
	j.credits++
	r.noteLocked(j, "subscribe")
	r.b.subscribe(job)
}

func (r *contractRecorder) unsubscribe(jobs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, job := range jobs {
		r.unsubscribeLocked(job)
	}
}

func (r *contractRecorder) unsubscribeLocked(job string) {
	j := r.jobLocked(job)
	if !j.wanted {
		panic("unsubscribe of a job not subscribed: " + job)
	}
	j.wanted, j.live, j.lostLive = false, false, false
	r.noteLocked(j, "unsubscribe")
	r.b.unsubscribe(job)
}

// toggle unsubscribes a job that is subscribed, and subscribes it if not.
func (r *contractRecorder) toggle(job string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobLocked(job).wanted {
		r.unsubscribeLocked(job)
	} else {
		r.subscribeLocked(job)
	}
}

func (r *contractRecorder) confirmed(job string) {
	r.mu.Lock()
	hook := r.onConfirmed
	r.mu.Unlock()
	if hook != nil {
		hook(job)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobLocked(job)
	j.confirms++
	r.noteLocked(j, "confirmed (published so far: %d)", j.pub.Load())
	if j.credits == 0 {
		r.violationLocked(job, j, "confirmed again with neither a lost nor a subscribe since the last confirmed")
	} else {
		j.credits--
	}
	if !j.wanted {
		j.strays++
		return // the hub has no jobSub: ignored
	}
	if !j.live {
		j.live, j.lostLive = true, false
		j.expect = j.pub.Load() + 1
	}
}

func (r *contractRecorder) lost(job string) {
	r.mu.Lock()
	hook := r.onLost
	r.mu.Unlock()
	if hook != nil {
		hook(job)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobLocked(job)
	j.losts++
	r.noteLocked(j, "lost")
	switch {
	case !j.wanted:
		j.strays++
	case j.live:
		j.live, j.lostLive = false, true
		j.credits++
	case j.lostLive:
		r.violationLocked(job, j, "lost twice with no confirmed between")
	}
	// A lost of a job subscribed again and not confirmed yet is what the
	// hub ignores: the subscription it kept failed before it was confirmed
	// again (and the confirmation that follows needs no refill).
}

func (r *contractRecorder) delivered(job, payload string) {
	r.mu.Lock()
	hook := r.onDelivered
	r.mu.Unlock()
	if hook != nil {
		hook(job, payload)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobLocked(job)
	j.delivers++
	seq, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		r.violationLocked(job, j, "delivered %q, not a sequence number of this test", payload)
		return
	}
	if !j.wanted {
		j.strays++
		r.noteLocked(j, "delivered %d (not subscribed)", seq)
		return
	}
	if j.lostLive {
		r.violationLocked(job, j, "delivered %d between lost and the next confirmed", seq)
	}
	if seq <= j.last {
		r.violationLocked(job, j, "delivered %d after %d: twice, or out of order", seq, j.last)
	}
	next := max(j.expect, j.last+1)
	for next < seq && j.failed[next] {
		next++
	}
	if j.live && j.expect > 0 && seq > next {
		r.violationLocked(job, j, "delivered %d while %d..%d, published since it was confirmed, never came and no lost told the hub to refill them", seq, next, seq-1)
	}
	j.last = max(j.last, seq)
}

// within polls cond, under the recorder's lock, until it holds or timeout
// passes.
func (r *contractRecorder) within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get returns a copy of the counters of job.
func (r *contractRecorder) get(job string) (confirms, losts, strays int, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobLocked(job)
	return j.confirms, j.losts, j.strays, j.live
}

func (r *contractRecorder) describe(jobs []string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, job := range jobs {
		j := r.jobLocked(job)
		fmt.Fprintf(&b, "job %s (wanted %v live %v last %d published %d):\n  %s\n", job, j.wanted, j.live, j.last, j.pub.Load(), strings.Join(tail(j.history, 12), "\n  "))
	}
	return b.String()
}

// clusterRig is a real cluster, a clusterBroker on it and its recorder.
type clusterRig struct {
	t      *testing.T
	rc     *redistest.Cluster
	ms     []*redistest.Node    // the masters at start
	cc     *redis.ClusterClient // the broker's, and the test publisher's unless direct
	direct bool                 // publish to the slot's master with a client of its own
	m      *metrics
	b      *clusterBroker
	rec    *contractRecorder
	logs   *lockedBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clusterTestConfig: canaries (and slot map reads) every 200 ms, so a
// wedged connection shows in 600 ms; Redis calls bounded by 300 ms (the
// defaults' ratio, 2 s and 3 s).
func clusterTestConfig(logs *lockedBuffer) Config {
	return Config{
		CanaryInterval: 200 * time.Millisecond, RedisTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// clusterClient is a cluster client as cmd/gateway builds one: every call
// bounded by its context's deadline and by RedisTimeout.
func clusterClient(addrs []string, d time.Duration) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: addrs, ContextTimeoutEnabled: true,
		DialTimeout: d, ReadTimeout: d, WriteTimeout: d, PoolTimeout: d, MaxRetries: 8,
	})
}

func newClusterRig(t *testing.T, opts ...redistest.ClusterOption) *clusterRig {
	t.Helper()
	return newClusterRigWith(t, nil, opts...)
}

// newClusterRigWith is newClusterRig with tweak applied to the broker's
// configuration (and its RedisTimeout to the cluster client's).
func newClusterRigWith(t *testing.T, tweak func(*Config), opts ...redistest.ClusterOption) *clusterRig {
	t.Helper()
	rc := redistest.StartCluster(t, opts...)
	logs := &lockedBuffer{}
	cfg := clusterTestConfig(logs)
	if tweak != nil {
		tweak(&cfg)
	}
	cc := clusterClient(rc.Addrs(), cfg.RedisTimeout)
	r := &clusterRig{t: t, rc: rc, ms: rc.Masters(), cc: cc, logs: logs}
	r.rec = newContractRecorder(t)
	r.m = newMetrics(prometheus.NewRegistry())
	r.b = newClusterBroker(cc, cfg, protocol.NewKeys(""), r.rec.events(), r.m, "test")
	r.rec.b = r.b
	t.Cleanup(func() {
		r.stop()
		_ = cc.Close()
		if t.Failed() {
			t.Logf("broker logs:\n%s", r.logs)
		}
	})
	return r
}

func (r *clusterRig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		r.b.run(ctx)
	}()
}

// stop ends run's context and waits for run to return.
func (r *clusterRig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.t.Error("run has not returned 10 s after its context ended")
	}
	r.cancel = nil
}

// jobsPerMaster returns, for each master, n job names in its slots, each in
// a slot of its own.
func (r *clusterRig) jobsPerMaster(prefix string, n int) [][]string {
	out := make([][]string, len(r.ms))
	used := map[int]bool{}
	for i := 0; ; i++ {
		job := fmt.Sprintf("%s-%d", prefix, i)
		s := protocol.Slot(job)
		for k, m := range r.ms {
			if m.Has(s) && !used[s] && len(out[k]) < n {
				out[k] = append(out[k], job)
				used[s] = true
			}
		}
		full := true
		for _, js := range out {
			full = full && len(js) == n
		}
		if full {
			return out
		}
	}
}

// publish sends job its next sequence number and returns it.
func (r *clusterRig) publish(job string) (int64, error) {
	r.rec.mu.Lock()
	j := r.rec.jobLocked(job)
	r.rec.mu.Unlock()
	seq := j.pub.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ch, msg := r.b.keys.Live(job), strconv.FormatInt(seq, 10)
	var err error
	if !r.direct {
		err = r.cc.SPublish(ctx, ch, msg).Err()
	} else if n := r.rc.NodeForSlot(protocol.Slot(ch)); n == nil {
		err = fmt.Errorf("slot %d has no master", protocol.Slot(ch))
	} else {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		err = c.SPublish(ctx, ch, msg).Err()
		_ = c.Close()
	}
	if err != nil {
		r.rec.mu.Lock()
		if j.failed == nil {
			j.failed = map[int64]bool{}
		}
		j.failed[seq] = true
		r.rec.mu.Unlock()
	}
	return seq, err
}

// publishLoop publishes to every job, one after the other, until the
// returned stop is called. Failures (a slot in migration) are only counted.
func (r *clusterRig) publishLoop(jobs []string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Int64
	wg.Go(func() {
		for {
			for _, job := range jobs {
				if _, err := r.publish(job); err != nil {
					failed.Add(1)
				}
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if n := failed.Load(); n > 0 {
			r.t.Logf("%d publishes failed", n)
		}
	}
}

// settle checks that every job of jobs that is wanted is live, as the hub
// sees it, within 5 s, and delivers a message published then (published
// again if the job was lost meanwhile: the hub would refill that one from
// the stream).
func (r *clusterRig) settle(jobs []string) {
	r.t.Helper()
	var wanted []string
	r.rec.mu.Lock()
	for _, job := range jobs {
		if r.rec.jobLocked(job).wanted {
			wanted = append(wanted, job)
		}
	}
	r.rec.mu.Unlock()
	notLive := func() (out []string) { // under r.rec.mu
		for _, job := range wanted {
			if !r.rec.jobs[job].live {
				out = append(out, job)
			}
		}
		return out
	}
	sent := map[string]int64{} // the message each job must deliver
	losses := map[string]int{} // its losses when that was published
	deadline := time.Now().Add(5 * time.Second)
	for {
		if !r.rec.within(time.Until(deadline), func() bool { return len(notLive()) == 0 }) {
			r.rec.mu.Lock()
			stuck := notLive()
			r.rec.mu.Unlock()
			r.t.Errorf("wanted jobs not live (confirmed, and not lost since) after 5 s:\n%s", r.rec.describe(stuck))
			return
		}
		var missing []string
		for _, job := range wanted {
			r.rec.mu.Lock()
			j := r.rec.jobs[job]
			last, losts, live := j.last, j.losts, j.live
			r.rec.mu.Unlock()
			if s, ok := sent[job]; ok && last >= s {
				continue
			}
			missing = append(missing, job)
			if _, ok := sent[job]; live && (!ok || losts != losses[job]) {
				seq, err := r.publish(job)
				if err != nil { // tried again (the cluster client may not know a failover yet)
					r.t.Logf("SPUBLISH to %s: %v", job, err)
					continue
				}
				sent[job], losses[job] = seq, losts
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.t.Errorf("live jobs did not deliver a message within 5 s:\n%s", r.rec.describe(missing))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *clusterRig) shard(addr string) *shard {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return r.b.shards[addr]
}

func (r *clusterRig) eventually(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReleased waits until the router has taken job off c (the lost it
// then tells may still be on its way).
func (r *clusterRig) waitReleased(c *psConn, job string) {
	r.t.Helper()
	r.eventually("the router to take "+job+" off its old shard", 3*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		s := c.subs[r.b.keys.Live(job)]
		return s == nil || !s.wanted
	})
}

func (r *clusterRig) pubsubErrors() float64 {
	return testutil.ToFloat64(r.m.redisErrors.WithLabelValues("pubsub"))
}

// TestClusterBrokerDeliversOnEveryShard: jobs asked for before the first
// slot map and after it are confirmed on their masters' shards and deliver
// what is published to them; healthy is an error until the slot map is read
// and every shard is proven; an unsubscribed job hears nothing more.
func TestClusterBrokerDeliversOnEveryShard(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("d", 4)
	all := slices.Concat(per...)
	if err := r.b.healthy(); err == nil {
		t.Error("healthy before run: nil, want an error")
	}
	r.rec.subscribe(all[:5]...) // before run: no slot map yet
	r.start()
	r.rec.subscribe(all[5:]...)
	r.settle(all)
	r.eventually("healthy", 5*time.Second, func() bool { return r.b.healthy() == nil })
	r.b.mu.Lock()
	n := len(r.b.shards)
	r.b.mu.Unlock()
	if n != 3 {
		t.Errorf("%d shards, want 3", n)
	}

	gone := []string{per[0][0], per[1][0], per[2][0]}
	r.rec.unsubscribe(gone...)
	time.Sleep(300 * time.Millisecond) // the SUNSUBSCRIBEs go out
	for _, job := range gone {
		if _, err := r.publish(job); err != nil {
			t.Fatal(err)
		}
	}
	r.settle(all)
	for _, job := range gone {
		if _, _, strays, _ := r.rec.get(job); strays != 0 {
			t.Errorf("job %s: %d callbacks after its unsubscribe:\n%s", job, strays, r.rec.describe([]string{job}))
		}
	}
}

// TestClusterBrokerSlotMigration: a job whose slot moves, live, while it is
// published to, is lost and confirmed on its new master, nothing delivered
// between; no other job notices.
func TestClusterBrokerSlotMigration(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("m", 3)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	stop := r.publishLoop(all)
	mover := per[0][0]
	r.rc.MigrateSlot(t, protocol.Slot(mover), r.ms[1])
	if !r.rec.within(5*time.Second, func() bool {
		j := r.rec.jobs[mover]
		return j.losts > 0 && j.live
	}) {
		t.Errorf("the moved job was not lost and confirmed again:\n%s", r.rec.describe([]string{mover}))
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	r.settle(all)
	for _, job := range all[1:] {
		if _, losts, _, _ := r.rec.get(job); losts != 0 {
			t.Errorf("job %s, whose slot did not move, was lost %d times:\n%s", job, losts, r.rec.describe([]string{job}))
		}
	}
	if n := r.pubsubErrors(); n != 0 {
		t.Errorf("%v pub/sub connections failed during the migration of one slot", n)
	}
}

// TestClusterBrokerCanarySlotMoves: when the slot of a shard's canary moves
// to another master, the shard is replaced by one with a canary in its
// master's slots; its jobs are lost and confirmed again, the other shards'
// jobs are untouched, and the old shard's client is closed.
func TestClusterBrokerCanarySlotMoves(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("c", 3)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)
	r.eventually("healthy", 5*time.Second, func() bool { return r.b.healthy() == nil })

	a := r.ms[0]
	old := r.shard(a.Addr)
	stop := r.publishLoop(all)
	r.rc.MigrateSlot(t, protocol.Slot(old.conn.canary), r.ms[1])
	r.eventually("a new shard for "+a.Addr, 5*time.Second, func() bool {
		sh := r.shard(a.Addr)
		return sh != nil && sh != old
	})
	time.Sleep(200 * time.Millisecond)
	stop()
	r.settle(all)
	if sh := r.shard(a.Addr); !a.Has(protocol.Slot(sh.conn.canary)) {
		t.Errorf("the new shard's canary %s is not in its master's slots", sh.conn.canary)
	}
	for _, job := range per[0] {
		if _, losts, _, _ := r.rec.get(job); losts == 0 {
			t.Errorf("job %s on the replaced shard was never lost", job)
		}
	}
	for _, job := range slices.Concat(per[1:]...) {
		if _, losts, _, _ := r.rec.get(job); losts != 0 {
			t.Errorf("job %s on another shard was lost %d times", job, losts)
		}
	}
	r.eventually("the old shard's client closed", 5*time.Second, func() bool {
		return old.client.Ping(context.Background()).Err() == redis.ErrClosed
	})
	r.eventually("healthy again", 5*time.Second, func() bool { return r.b.healthy() == nil })
}

// TestClusterBrokerChurnDuringMigrations: jobs subscribed and unsubscribed
// at random, from several goroutines, while their slots move from master to
// master and they are published to: the contract holds throughout, and at
// the end every wanted job is live and delivers.
func TestClusterBrokerChurnDuringMigrations(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("x", 4)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	stopPub := r.publishLoop(all)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Duration(rnd.IntN(3000)) * time.Microsecond):
				}
				r.rec.toggle(all[rnd.IntN(len(all))])
			}
		})
	}
	// Move the slots of one job per master around the three masters.
	movers := []string{per[0][0], per[1][0], per[2][0]}
	for round := 1; round <= 2; round++ {
		for i, job := range movers {
			r.rc.MigrateSlot(t, protocol.Slot(job), r.ms[(i+round)%3])
			time.Sleep(50 * time.Millisecond)
		}
	}
	close(done)
	wg.Wait()
	r.rec.mu.Lock()
	for _, job := range all {
		if !r.rec.jobLocked(job).wanted {
			r.rec.subscribeLocked(job)
		}
	}
	r.rec.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	stopPub()
	r.settle(all)
}

// TestClusterBrokerStopsEverything: once run's context ends, run returns
// with every goroutine it started gone and every shard client closed, the
// replaced ones included.
func TestClusterBrokerStopsEverything(t *testing.T) {
	// Not parallel: goleak looks at every goroutine of the process.
	r := newClusterRig(t)
	ignore := goleak.IgnoreCurrent()
	per := r.jobsPerMaster("s", 2)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)
	old := r.shard(r.ms[0].Addr)
	r.rc.MigrateSlot(t, protocol.Slot(old.conn.canary), r.ms[1]) // a shard replaced
	r.rc.MigrateSlot(t, protocol.Slot(per[2][0]), r.ms[0])       // a job moved
	r.settle(all)

	r.b.mu.Lock()
	shards := make([]*shard, 0, len(r.b.shards))
	for _, sh := range r.b.shards {
		shards = append(shards, sh)
	}
	r.b.mu.Unlock()
	r.stop()
	for _, sh := range append(shards, old) {
		if err := sh.client.Ping(context.Background()).Err(); err != redis.ErrClosed {
			t.Errorf("shard %s: client not closed after run returned (ping: %v)", sh.conn.name, err)
		}
	}
	_ = r.cc.Close()
	goleak.VerifyNone(t, ignore)
}

// TestClusterBrokerWithoutSlotMap: while the slot map cannot be read,
// healthy says so and subscribed jobs wait, without a callback; run returns
// when its context ends.
func TestClusterBrokerWithoutSlotMap(t *testing.T) {
	t.Parallel()
	srv := redistest.StartReal(t) // not a cluster: CLUSTER SHARDS fails
	cc := clusterClient([]string{srv.Addr()}, clusterTestConfig(nil).RedisTimeout)
	defer cc.Close()
	logs := &lockedBuffer{}
	rec := newContractRecorder(t)
	b := newClusterBroker(cc, clusterTestConfig(logs), protocol.NewKeys(""), rec.events(), newMetrics(prometheus.NewRegistry()), "test")
	rec.b = b
	rec.subscribe("w-1", "w-2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(ctx)
	}()
	time.Sleep(500 * time.Millisecond)
	if err := b.healthy(); err == nil {
		t.Error("healthy() = nil without a slot map")
	}
	for _, job := range []string{"w-1", "w-2"} {
		if c, l, _, _ := rec.get(job); c+l != 0 {
			t.Errorf("job %s: %d confirmed, %d lost without a slot map", job, c, l)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run has not returned 5 s after its context ended")
	}
}

// TestClusterBrokerStoppedMasterSparesTheOthers: with one master stopped
// (SIGSTOP: its port accepts connections, nothing is answered), the other
// shards go on getting their canary every interval and keep their
// subscriptions: a call hanging on one master must not hold back the
// canaries of the others (their connections, carrying nothing for three
// intervals, would be taken for wedged and replaced, every job on them
// lost).
func TestClusterBrokerStoppedMasterSparesTheOthers(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("p", 2)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)
	r.eventually("healthy", 5*time.Second, func() bool { return r.b.healthy() == nil })

	others := []*shard{r.shard(r.ms[0].Addr), r.shard(r.ms[1].Addr)}
	r.ms[2].Server.Pause(t)
	worst := map[string]time.Duration{}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, sh := range others {
			age := time.Since(time.Unix(0, sh.conn.lastCanary.Load()))
			worst[sh.conn.name] = max(worst[sh.conn.name], age)
		}
	}
	limit := 9 * r.b.canaryInterval / 4
	for name, age := range worst {
		t.Logf("shard %s: %v at most between canaries", name, age.Round(time.Millisecond))
		if age > limit {
			t.Errorf("shard %s went %v without a canary (over %v) while another master was stopped", name, age.Round(time.Millisecond), limit)
		}
	}
	for _, job := range slices.Concat(per[:2]...) {
		if _, losts, _, _ := r.rec.get(job); losts != 0 {
			t.Errorf("job %s, on a master that was not stopped, was lost %d times", job, losts)
		}
	}
	r.ms[2].Server.Resume(t)
	r.settle(all)
}

// TestClusterBrokerHealthyWithMasterPaused: with one master stopped (its
// connection wedged, then the cluster marking it failed), healthy reports
// it for as long as it is stopped, and nil again once it resumes, its jobs
// confirmed again.
func TestClusterBrokerHealthyWithMasterPaused(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("h", 2)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)
	r.eventually("healthy", 5*time.Second, func() bool { return r.b.healthy() == nil })

	m := r.ms[2]
	m.Server.Pause(t)
	r.eventually("healthy to report the stopped master", 3*time.Second, func() bool { return r.b.healthy() != nil })
	// The other masters mark it failed after the node timeout (1 s), and
	// CLUSTER SHARDS then reports its health "fail": the broker must go on
	// reporting it, its slots having no master that answers.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := r.b.healthy(); err == nil {
			t.Errorf("healthy() = nil with master %s stopped", m.Addr)
			break
		}
	}
	r.b.mu.Lock()
	n := len(r.b.shards)
	r.b.mu.Unlock()
	t.Logf("healthy with %s stopped: %v (%d shards)", m.Addr, r.b.healthy(), n)
	m.Server.Resume(t)
	r.eventually("healthy after the master resumed", 8*time.Second, func() bool { return r.b.healthy() == nil })
	r.settle(all)
}

// TestClusterBrokerFailover: a master is killed and its replica takes its
// slots over; the jobs of that master, lost when its connection failed, are
// confirmed on the new master's shard, and the dead master's shard retired.
func TestClusterBrokerFailover(t *testing.T) {
	t.Parallel()
	// go-redis dials a dead node five times, 100 ms apart, before it gives
	// up: calls that may reach it need more than the 300 ms of the others.
	r := newClusterRigWith(t, func(c *Config) {
		c.CanaryInterval, c.RedisTimeout = 400*time.Millisecond, time.Second
	}, redistest.WithReplicas())
	per := r.jobsPerMaster("o", 2)
	all := slices.Concat(per...)
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)
	r.eventually("healthy", 5*time.Second, func() bool { return r.b.healthy() == nil })

	dead := r.ms[2]
	r.rc.Kill(dead)
	r.eventually("a replica to take the dead master's slots", 10*time.Second, func() bool {
		for _, m := range r.rc.Masters() {
			if m.ID != dead.ID && m.Has(protocol.Slot(per[2][0])) {
				return true
			}
		}
		return false
	})
	r.direct = true // to each slot's master as the cluster now says, whatever the broker's client knows
	r.settle(all)
	// The broker read the new slot map: the cluster client it was given
	// (the gateway's, for its reads and publishes too) must follow it, not
	// go on sending the dead master's slots to the dead master until its
	// own reload (every 60 s), nor its canary PINGs.
	r.direct = false
	var err error
	r.eventually("the broker's cluster client to reach the new master", 5*time.Second, func() bool {
		if _, err = r.publish(per[2][0]); err != nil {
			t.Logf("SPUBLISH through the broker's cluster client: %v", err)
		}
		return err == nil
	})
	r.eventually("healthy after the failover", 5*time.Second, func() bool { return r.b.healthy() == nil })
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := r.b.healthy(); err != nil {
			t.Errorf("healthy after the failover: %v", err)
			break
		}
	}
	if sh := r.shard(dead.Addr); sh != nil {
		t.Errorf("the dead master %s still has a shard", dead.Addr)
	}
	for _, job := range per[2] {
		if _, losts, _, _ := r.rec.get(job); losts == 0 {
			t.Errorf("job %s of the dead master was never lost", job)
		}
	}
}

// holdReader makes the next delivered of job block until the returned
// release is called: the shard's reader is then busy (as with a hub whose
// lock is contended) while Redis goes on sending.
func (r *clusterRig) holdReader(job string) (release func()) {
	held := make(chan struct{})
	unblock := make(chan struct{})
	var once atomic.Bool
	r.rec.mu.Lock()
	r.rec.onDelivered = func(j, _ string) {
		if j == job && once.CompareAndSwap(false, true) {
			close(held)
			<-unblock
		}
	}
	r.rec.mu.Unlock()
	if _, err := r.publish(job); err != nil {
		r.t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		r.t.Fatal("the reader never delivered the message that holds it")
	}
	var closeOnce sync.Once
	release = func() { closeOnce.Do(func() { close(unblock) }) }
	r.t.Cleanup(release)
	return release
}

// TestClusterBrokerDropThenMovedAnswer: the reader of a shard is busy (the
// hub is slow to take a lost) while a job's slot moves; the router, reading
// the new slot map, takes the job off (SUNSUBSCRIBE), which Redis answers
// MOVED, after it has already sent its own SUNSUBSCRIBE push for the slot.
// The two answers for one command must not put the pending FIFO out of
// step: the connection stays up, and no other job on it is lost.
func TestClusterBrokerDropThenMovedAnswer(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("f", 3)
	all := slices.Concat(per...)
	mover, holder, bystander := per[0][0], per[0][1], per[0][2]
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	// The reader is held in the lost of another job of the shard whose slot
	// moved first: Redis's push for the mover's slot waits unread behind it.
	held, unblock := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	r.rec.mu.Lock()
	r.rec.onLost = func(job string) {
		if job == holder && once.CompareAndSwap(false, true) {
			close(held)
			<-unblock
		}
	}
	r.rec.mu.Unlock()
	var closeOnce sync.Once
	release := func() { closeOnce.Do(func() { close(unblock) }) }
	t.Cleanup(release)
	old := r.shard(r.ms[0].Addr).conn
	r.rc.MigrateSlot(t, protocol.Slot(holder), r.ms[1])
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader never told the loss that holds it")
	}
	r.rc.MigrateSlot(t, protocol.Slot(mover), r.ms[1])
	r.waitReleased(old, mover)
	time.Sleep(200 * time.Millisecond) // its SUNSUBSCRIBE is answered (MOVED)
	release()
	r.settle(all)
	time.Sleep(300 * time.Millisecond)
	if _, losts, _, _ := r.rec.get(bystander); losts != 0 {
		t.Errorf("job %s, whose slot did not move, was lost: its connection was dropped\n%s", bystander, r.rec.describe([]string{bystander}))
	}
	if n := r.pubsubErrors(); n != 0 {
		t.Errorf("%v pub/sub connection failures", n)
	}
}

// TestClusterBrokerResubscribeDuringMove: the hub drops a job and asks for
// it again while the router is telling it that the job's subscription was
// lost (moved to another master): the new shard's confirmed must not reach
// the hub before that lost, or the hub ends up believing the job lost while
// it is subscribed, and waits for a confirmation that never comes.
func TestClusterBrokerResubscribeDuringMove(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("q", 2)
	all := slices.Concat(per...)
	mover, busy := per[0][0], per[0][1]
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	release := r.holdReader(busy) // so the router, not the reader, hears of the move
	var once atomic.Bool
	r.rec.mu.Lock()
	r.rec.onLost = func(job string) {
		if job != mover || !once.CompareAndSwap(false, true) {
			return
		}
		// A client leaves and another joins, on the hub's goroutines.
		go func() {
			r.rec.unsubscribe(mover)
			r.rec.subscribe(mover)
		}()
		before := 0
		r.rec.within(time.Second, func() bool {
			j := r.rec.jobs[mover]
			if before == 0 {
				before = j.confirms + 1
			}
			return !j.wanted || j.confirms >= before
		})
	}
	r.rec.mu.Unlock()
	old := r.shard(r.ms[0].Addr).conn
	r.rc.MigrateSlot(t, protocol.Slot(mover), r.ms[1])
	r.waitReleased(old, mover)
	release() // the router tells the hub of the loss once the reader is done
	r.settle(all)
}

// TestClusterBrokerReplacedShardLostFirst: a shard's canary slot moves, so
// the shard is replaced; its connection's loss of a job reaches the hub
// late (the hub is busy). The replacement shard's confirmed of that job must
// come after it, or the hub believes the job lost for good.
func TestClusterBrokerReplacedShardLostFirst(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("r", 2)
	all := slices.Concat(per...)
	job := per[0][0]
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	var once atomic.Bool
	r.rec.mu.Lock()
	r.rec.onLost = func(j string) {
		if j != job || !once.CompareAndSwap(false, true) {
			return
		}
		before := -1
		r.rec.within(time.Second, func() bool {
			if before < 0 {
				before = r.rec.jobs[job].confirms
			}
			return r.rec.jobs[job].confirms > before
		})
	}
	r.rec.mu.Unlock()
	old := r.shard(r.ms[0].Addr)
	r.rc.MigrateSlot(t, protocol.Slot(old.conn.canary), r.ms[1])
	r.settle(all)
}

// TestClusterBrokerRouterLostAfterConfirmed: a job's first subscription is
// confirmed on its shard, slowly (the hub is busy), while its slot moves; the
// router, ahead of the shard's reader, takes it off the shard and tells the
// hub it is lost. That lost must not overtake the confirmed the reader is
// making: the hub would ignore it (nothing confirmed yet), then take the
// stale confirmed for the job being live, and no refill would cover what is
// published before the new shard's subscription.
func TestClusterBrokerRouterLostAfterConfirmed(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("k", 2)
	all := slices.Concat(per...)
	mover := per[0][0]
	r.rec.subscribe(all[1:]...)
	r.start()
	r.settle(all[1:])

	held, unblock := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	r.rec.mu.Lock()
	r.rec.onConfirmed = func(job string) {
		if job != mover {
			return
		}
		switch calls.Add(1) {
		case 1: // the old shard's reader, as the slot moves
			close(held)
			<-unblock
		case 2: // the new shard's: after the old one's, whatever the order of the others
			select {
			case <-unblock:
			case <-time.After(time.Second):
			}
		}
	}
	r.rec.mu.Unlock()
	r.rec.subscribe(mover)
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the job was never confirmed")
	}
	old := r.shard(r.ms[0].Addr).conn
	r.rc.MigrateSlot(t, protocol.Slot(mover), r.ms[1])
	r.waitReleased(old, mover)
	time.Sleep(100 * time.Millisecond) // the router tells the hub of the loss
	close(unblock)
	r.settle(all)
}

// TestClusterBrokerNoDeliveryAfterRouterLost: a job's slot moves while its
// shard's reader is handing one of its messages to the hub (slowly: the hub
// is busy). The router, ahead of the reader, takes the job off the shard
// and tells the hub it is lost: that lost must not overtake the delivery
// the reader is making, or the hub is handed a message between a lost and
// the next confirmed.
func TestClusterBrokerNoDeliveryAfterRouterLost(t *testing.T) {
	t.Parallel()
	r := newClusterRig(t)
	per := r.jobsPerMaster("n", 2)
	all := slices.Concat(per...)
	mover := per[0][0]
	r.rec.subscribe(all...)
	r.start()
	r.settle(all)

	old := r.shard(r.ms[0].Addr).conn
	release := r.holdReader(mover)
	released := make(chan struct{})
	r.rec.mu.Lock()
	r.rec.onConfirmed = func(job string) { // the new shard's, after the held delivery
		if job == mover {
			select {
			case <-released:
				time.Sleep(50 * time.Millisecond)
			case <-time.After(time.Second):
			}
		}
	}
	r.rec.mu.Unlock()
	r.rc.MigrateSlot(t, protocol.Slot(mover), r.ms[1])
	r.waitReleased(old, mover)
	time.Sleep(100 * time.Millisecond) // the router tells the hub of the loss
	release()
	close(released)
	r.settle(all)
}
