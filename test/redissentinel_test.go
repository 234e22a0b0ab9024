package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

// TestSentinelFailover: two gateways on a Sentinel set-up (a master, a
// replica, three sentinels) stream 6 jobs to 24 clients; the master is
// killed mid-job and the sentinels promote the replica while the worker
// goes on publishing. Every client sees its job's history exactly once, and
// the test reports the time from the kill to the first event stored on the
// new master and to its arrival at every client.
//
// Redis replicates asynchronously: an event acknowledged by a master that
// dies before its replica has it is gone from the new master, while clients
// may already have it live. The worker here makes each event durable
// (WAIT 1) and the kill comes between two events, so the test measures the
// gateway, not that Redis trade-off (docs/operations.md, "Redis
// deployments").
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	// One connection, so WAIT follows the write it is about.
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs(),
		PoolSize: 1, MaxRetries: -1, DialTimeout: 500 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { rdb.Close() })
	c := &cluster{t: t, rdb: rdb, pub: publisher.New(rdb, publisher.WithMaxLen(1_000_000))}
	for range 2 {
		c.gws = append(c.gws, gatewaytest.Start(t, s.URL()))
	}
	jobs := jobNames("failover", 6)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 24)

	const steps = 40
	var (
		mu      sync.Mutex
		paused  bool
		resume  = make(chan struct{})
		idle    = make(chan struct{}, 1)
		killed  time.Time
		firstOK time.Time // the first event stored after the kill
		firstAt struct{ job, id string }
		retries int
	)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		for step := 1; step <= steps; step++ {
			for _, id := range jobs {
				mu.Lock()
				if paused {
					mu.Unlock()
					idle <- struct{}{}
					<-resume
					mu.Lock()
				}
				mu.Unlock()
				job := c.pub.Job(id).WithIdempotencyKey(fmt.Sprintf("s%d", step))
				for attempt := 0; ; attempt++ {
					eid, err := job.Progress(ctx, publisher.Step{Step: step, Total: steps})
					mu.Lock()
					before := killed.IsZero()
					mu.Unlock()
					if err == nil && before {
						// Durable on the replica before the next one. (After the
						// kill the new master has no replica to wait for.)
						err = rdb.Do(ctx, "WAIT", 1, 500).Err()
					}
					if err == nil {
						mu.Lock()
						if !killed.IsZero() && firstOK.IsZero() {
							firstOK, firstAt.job, firstAt.id = time.Now(), id, eid
						}
						mu.Unlock()
						break
					}
					if attempt > 200 {
						done <- fmt.Errorf("job %s step %d: %w", id, step, err)
						return
					}
					mu.Lock()
					retries++
					if retries <= 3 || retries%20 == 0 {
						t.Logf("publish attempt %d: %v", retries, err)
					}
					mu.Unlock()
					time.Sleep(50 * time.Millisecond) // the same event again: its idempotency key makes that safe
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		for _, id := range jobs {
			if _, err := c.pub.Job(id).WithIdempotencyKey("done").Complete(ctx, "r-"+id, nil); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	// Kill the master between two events, a third of the way in.
	streamtest.Eventually(t, "a third of the events delivered", func() bool {
		return len(clients[0].Events()) > steps/3
	})
	mu.Lock()
	paused = true
	mu.Unlock()
	<-idle
	old := s.MasterAddr(t)
	mu.Lock()
	killed, paused = time.Now(), false
	mu.Unlock()
	close(resume)
	// Watch for the first event after the kill at every client of its job.
	arrived := make(chan time.Duration, 1)
	go func() {
		deadline := time.Now().Add(streamtest.Wait)
		for time.Now().Before(deadline) {
			mu.Lock()
			job, id := firstAt.job, firstAt.id
			mu.Unlock()
			if id != "" && allHave(clients, jobs, job, id) {
				arrived <- time.Since(killed)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		close(arrived)
	}()
	newMaster, took := s.Failover(t)
	t.Logf("master %s killed; sentinels promoted %s after %v", old, newMaster, took.Round(time.Millisecond))

	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(streamtest.Wait):
		t.Fatal("the worker did not finish")
	}
	mu.Lock()
	t.Logf("first event stored on the new master %v after the kill (%d publish attempts failed meanwhile)",
		firstOK.Sub(killed).Round(time.Millisecond), retries)
	mu.Unlock()
	if d, ok := <-arrived; ok {
		t.Logf("and at every client of its job %v after the kill", d.Round(time.Millisecond))
	} else {
		t.Error("the first event after the failover never reached every client of its job")
	}
	c.checkAll(jobs, clients)
}

// allHave reports whether every client of job (client i watches job i mod
// len(jobs)) has received the event id.
func allHave(clients []*streamtest.Stream, jobs []string, job, id string) bool {
	for i, cl := range clients {
		if jobs[i%len(jobs)] != job {
			continue
		}
		found := false
		for _, e := range cl.Events() {
			if e.ID == id {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
