package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/redisurl"
	"github.com/ssegate/ssegate/publisher"
)

// A target is where events are published: Redis through the publisher
// library (for gateways), or the floor server. Calls for one job come from
// one goroutine at a time, in order; calls for different jobs may run
// concurrently.
type target interface {
	// register creates job j.
	register(ctx context.Context, j int) error
	// progress publishes step of job j, stamped with the publish time, and
	// returns its event ID. history asks the floor server to keep the
	// event for resuming clients (Redis keeps every event anyway).
	progress(ctx context.Context, j, step int, history bool) (protocol.ID, error)
	// complete ends job j after its last step.
	complete(ctx context.Context, j, last int) error
	// sync returns once everything published so far is applied: a client
	// that connects after it sees it all.
	sync(ctx context.Context) error
	// close releases the target.
	close() error
}

// totalSteps is the totalSteps of every progress event: larger than any
// run's steps per job.
const totalSteps = 1 << 30

// stampMarker precedes the publish time (Unix nanoseconds) in the
// currentStep of every progress event ssebench publishes.
const stampMarker = `"currentStep":"t=`

// stepName returns a progress step name carrying the publish time, padded
// with pad.
func stepName(now time.Time, pad string) string {
	var b strings.Builder
	b.Grow(24 + len(pad))
	b.WriteString("t=")
	b.WriteString(strconv.FormatInt(now.UnixNano(), 10))
	b.WriteByte(';')
	b.WriteString(pad)
	return b.String()
}

// parseStamp finds the publish time in a progress event's data without
// decoding the JSON.
func parseStamp(data []byte) (int64, bool) {
	i := indexOf(data, stampMarker)
	if i < 0 {
		return 0, false
	}
	var v int64
	n := 0
	for _, c := range data[i+len(stampMarker):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return v, n > 0 && n <= 19
}

func indexOf(b []byte, s string) int {
	// strings.Index on the bytes without a copy: the compiler does not
	// allocate for a string(b) conversion used only for the call.
	return strings.Index(string(b), s)
}

// padding returns the step-name padding that brings a progress event's data
// JSON to about payload bytes.
func padding(job string, payload int) string {
	if payload <= 0 {
		return ""
	}
	eta := int64(999999999999)
	p := event.NewProgress(job, 1, totalSteps, stepName(time.Now(), ""), time.Now())
	p.EstimatedRemainingMs = &eta
	b, _ := json.Marshal(p)
	return strings.Repeat("x", max(0, payload-len(b)))
}

// progressData returns a progress event's data JSON as the publish script
// would store it (with an estimate), for the floor server.
func progressData(job string, step int, name string, now time.Time) []byte {
	eta := int64(totalSteps-step) * 1000
	p := event.NewProgress(job, step, totalSteps, name, now)
	p.EstimatedRemainingMs = &eta
	b, _ := json.Marshal(p)
	return b
}

// redisTarget publishes through the publisher library.
type redisTarget struct {
	rdb  redis.UniversalClient
	jobs []*publisher.Job
	pad  string
}

func newRedisTarget(c *config) (*redisTarget, error) {
	rc, err := redisurl.Parse(c.redisURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	switch {
	case rc.Single != nil:
		rc.Single.PoolSize = max(rc.Single.PoolSize, c.publishers+4)
	case rc.Cluster != nil:
		rc.Cluster.PoolSize = max(rc.Cluster.PoolSize, c.publishers+4) // per node
	case rc.Failover != nil:
		rc.Failover.PoolSize = max(rc.Failover.PoolSize, c.publishers+4)
	}
	rdb := rc.NewClient()
	pub := publisher.New(rdb, publisher.WithKeyPrefix(c.keyPrefix))
	t := &redisTarget{rdb: rdb, pad: padding(c.jobName(c.jobs-1), c.payload)}
	for j := range c.jobs {
		t.jobs = append(t.jobs, pub.Job(c.jobName(j)))
	}
	return t, nil
}

func (t *redisTarget) register(ctx context.Context, j int) error {
	_, err := t.jobs[j].Register(ctx)
	return err
}

func (t *redisTarget) progress(ctx context.Context, j, step int, _ bool) (protocol.ID, error) {
	s, err := t.jobs[j].Progress(ctx, publisher.Step{Step: step, Total: totalSteps, Name: stepName(time.Now(), t.pad)})
	if err != nil {
		return protocol.ID{}, err
	}
	return protocol.ParseID(s)
}

func (t *redisTarget) complete(ctx context.Context, j, _ int) error {
	_, err := t.jobs[j].Complete(ctx, "ssebench", nil)
	return err
}

// sync has nothing to wait for: a publish returns once Redis has the event.
func (t *redisTarget) sync(context.Context) error { return nil }

func (t *redisTarget) close() error { return t.rdb.Close() }

// expectation is what every client of a job must receive: the number of
// counted events and the sum of their ID hashes.
type expectation struct {
	count uint64
	hash  uint64
	last  int // the job's last step published
}

// publishers runs the publishing side: one goroutine per slice of the jobs
// (job j belongs to goroutine j mod n), so each job's events are published
// in order.
type publishers struct {
	t      target
	expect []expectation // index: job; written only by the job's owner
	queues []chan int
	wg     sync.WaitGroup

	stopping  atomic.Bool
	published atomic.Int64
	errors    atomic.Int64
	errs      *errorSample
}

func newPublishers(t target, jobs, n int, errs *errorSample) *publishers {
	return &publishers{t: t, expect: make([]expectation, jobs), queues: make([]chan int, min(n, jobs)), errs: errs}
}

// start starts the goroutines; each publishes the jobs sent to its queue.
func (p *publishers) start(ctx context.Context) {
	for i := range p.queues {
		q := make(chan int, 1024)
		p.queues[i] = q
		p.wg.Go(func() {
			for j := range q {
				if p.stopping.Load() {
					continue // stopped: drop what is still queued
				}
				p.publish(ctx, j, false)
			}
		})
	}
}

// publish publishes the next step of job j and counts it as expected.
func (p *publishers) publish(ctx context.Context, j int, history bool) {
	e := &p.expect[j]
	id, err := p.t.progress(ctx, j, e.last+1, history)
	if err != nil {
		p.errors.Add(1)
		p.errs.add("publish: " + err.Error())
		return
	}
	e.last++
	e.count++
	e.hash += idHash(id)
	p.published.Add(1)
}

// send queues one event of job j; it blocks while the job's publisher is
// behind, so the achieved rate shows it. It reports false once ctx ends or
// stop is closed.
func (p *publishers) send(ctx context.Context, j int, stop <-chan struct{}) bool {
	select {
	case p.queues[j%len(p.queues)] <- j:
		return true
	case <-ctx.Done():
	case <-stop:
	}
	return false
}

// stop drops what is still queued, closes the queues and waits.
func (p *publishers) stop() {
	p.stopping.Store(true)
	for _, q := range p.queues {
		close(q)
	}
	p.wg.Wait()
}

// forEachJob runs f for every job on n goroutines, jobs spread as the
// publishers spread them, and returns the first error.
func forEachJob(jobs, n int, f func(j int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	n = min(n, jobs)
	for g := range n {
		wg.Go(func() {
			for j := g; j < jobs; j += n {
				if err := f(j); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// pace sends rate events per second, round-robin over the jobs, from now
// until ctx ends or stop is closed.
func pace(ctx context.Context, p *publishers, jobs int, rate float64, stop <-chan struct{}) {
	start := time.Now()
	var sent int64
	next := 0
	for {
		due := int64(time.Since(start).Seconds() * rate)
		for ; sent < due; sent++ {
			if !p.send(ctx, next, stop) {
				return
			}
			next = (next + 1) % jobs
		}
		wait := time.Until(start.Add(time.Duration(float64(sent+1) / rate * float64(time.Second))))
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// idHash mixes an event ID into 64 bits; a client's sum of the hashes of
// what it received must equal the sum over what was published.
func idHash(id protocol.ID) uint64 {
	return splitmix(id.Ms*0x9e3779b97f4a7c15 ^ splitmix(id.Seq))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// errorSample keeps the first few distinct error messages, and counts all.
type errorSample struct {
	mu   sync.Mutex // guards msgs
	msgs map[string]int
}

func (e *errorSample) add(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.msgs == nil {
		e.msgs = map[string]int{}
	}
	if _, ok := e.msgs[msg]; ok || len(e.msgs) < 10 {
		e.msgs[msg]++
	}
}

func (e *errorSample) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for m, n := range e.msgs {
		out = append(out, fmt.Sprintf("%s (x%d)", m, n))
	}
	sort.Strings(out)
	return out
}
