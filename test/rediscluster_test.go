package test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

// The gateway's main flows on a real three-master Redis Cluster: sharded
// pub/sub (SSUBSCRIBE on each job's master, SPUBLISH from the publish
// script), resumes across gateways, pub/sub cuts and a live slot migration.

// onCluster is a real three-master Redis Cluster and gateway processes on it.
func onCluster(t *testing.T, gateways int, flags ...string) (*cluster, *redistest.Cluster) {
	t.Helper()
	rc := redistest.StartCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), DialTimeout: time.Second, MaxRetries: 8})
	t.Cleanup(func() { cc.Close() })
	c := &cluster{t: t, rdb: cc, pub: publisher.New(cc, publisher.WithMaxLen(1_000_000))}
	for range gateways {
		c.gws = append(c.gws, gatewaytest.Start(t, rc.URL(), gatewaytest.WithFlags(flags...)))
	}
	return c, rc
}

// spread returns n job names whose slots cover every master.
func spread(t *testing.T, rc *redistest.Cluster, prefix string, n int) []string {
	t.Helper()
	jobs := jobNames(prefix, n)
	per := map[string]int{}
	for _, j := range jobs {
		per[rc.NodeForSlot(protocol.Slot(j)).Addr]++
	}
	if len(per) != 3 {
		t.Fatalf("the %d jobs hash to %d masters, want 3: %v", n, len(per), per)
	}
	t.Logf("jobs per master: %v", per)
	return jobs
}

// TestClusterStreamsAcrossShards: 60 clients on two gateways watch 30 jobs
// hashed to all three masters while one gateway is killed mid-job; every
// client sees its job's history exactly once, the killed gateway's clients
// resuming on the other with Last-Event-ID.
func TestClusterStreamsAcrossShards(t *testing.T) {
	t.Parallel()
	c, rc := onCluster(t, 2)
	jobs := spread(t, rc, "shard", 30)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 60)
	errc := c.publishAll(jobs, 20, 10*time.Millisecond, 0)
	time.Sleep(80 * time.Millisecond)
	c.gws[0].Kill()
	waitAll(t, errc, len(jobs))
	if moved := c.checkAll(jobs, clients); moved < 30 {
		t.Errorf("%d clients resumed on the other gateway, want the 30 of the killed one", moved)
	}
	for _, g := range c.gws[1:] {
		if st, body := status(g.URL + "/readyz"); st != 200 {
			t.Errorf("/readyz: %d %s", st, body)
		}
	}
}

// TestClusterPubSubCut: Redis closes every pub/sub connection of every
// master mid-job; the gateway subscribes again on each shard and refills
// the gap from the streams: nothing lost, nothing twice.
func TestClusterPubSubCut(t *testing.T) {
	t.Parallel()
	c, rc := onCluster(t, 1)
	jobs := spread(t, rc, "cut", 12)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 24)
	errc := c.publishAll(jobs, 20, 10*time.Millisecond, 0)
	time.Sleep(60 * time.Millisecond)
	for _, m := range rc.Masters() {
		rc.Do(t, m, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	waitAll(t, errc, len(jobs))
	if moved := c.checkAll(jobs, clients); moved != 0 {
		t.Errorf("%d clients reconnected; a pub/sub cut should not reach clients", moved)
	}
	streamtest.Eventually(t, "a reconnect counted", func() bool {
		return metric(t, c.gws[0], "ssegate_redis_reconnects_total") >= 3
	})
}

// TestClusterSlotMigration: a live job's slot moves to another master
// while clients on two gateways watch it and its worker keeps publishing.
// Events published after the move reach the clients live (the gateways
// follow the slot to its new owner), and each client sees the history
// exactly once.
func TestClusterSlotMigration(t *testing.T) {
	t.Parallel()
	c, rc := onCluster(t, 2, "--log-level", "debug")
	job := "migrating-job"
	slot := protocol.Slot(job)
	from := rc.NodeForSlot(slot)
	c.register(job)
	var clients []*streamtest.Stream
	for i := range 10 {
		clients = append(clients, streamtest.Open(t, c.urls(job, i%2), ""))
	}
	for _, s := range clients {
		s.WaitEvents(t, 1)
	}
	ctx := context.Background()
	j := c.pub.Job(job)
	step := 0
	publish := func(n int) {
		t.Helper()
		for range n {
			step++
			if _, err := j.Progress(ctx, publisher.Step{Step: step, Total: 1000, Name: fmt.Sprint("step ", step)}); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
	}
	// Each client has the registered status and n progress events.
	waitLive := func(n int) {
		t.Helper()
		for _, s := range clients {
			s.WaitEvents(t, 1+n)
		}
	}
	publish(10)
	waitLive(10)

	// The worker keeps publishing during the migration (go-redis follows
	// the ASK and MOVED answers, and retries TRYAGAIN).
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-stop:
				return
			default:
			}
			step++
			if _, err := j.Progress(ctx, publisher.Step{Step: step, Total: 1000, Name: fmt.Sprint("step ", step)}); err != nil {
				errc <- fmt.Errorf("step %d during the migration: %w", step, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var to *redistest.Node
	for _, m := range rc.Masters() {
		if m.ID != from.ID {
			to = m
			break
		}
	}
	start := time.Now()
	rc.MigrateSlot(t, slot, to)
	t.Logf("slot %d moved from %s to %s in %v", slot, from.Addr, to.Addr, time.Since(start).Round(time.Millisecond))
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	during := step - 10
	if got := rc.NodeForSlot(slot); got.ID != to.ID {
		t.Fatalf("slot %d is on %s after the migration, want %s", slot, got.Addr, to.Addr)
	}

	// After the move: published through the new owner, seen live.
	t.Logf("%d events published during the migration", during)
	moved := time.Now()
	publish(10)
	waitLive(step)
	t.Logf("10 events after the move reached 10 clients in %v", time.Since(moved).Round(time.Millisecond))
	if _, err := j.Complete(ctx, "r-1", nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range clients {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), c.history(job))
		if s.Client.Connects() != 1 {
			t.Errorf("a client reconnected %d times; a slot migration should not reach clients", s.Client.Connects()-1)
		}
	}
	for i, g := range c.gws {
		logs := g.Logs()
		if strings.Contains(logs, "level=ERROR") {
			t.Errorf("gateway errors:\n%s", logs)
		}
		// What moved the subscription: Redis dropping it (SUNSUBSCRIBE),
		// refusing it (MOVED), or the periodic slot map.
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "sharded") {
				t.Logf("gateway %d: %s", i, l)
			}
		}
	}
}

// TestClusterReadyzCoversEveryShard: /readyz fails when one master's live
// path is wedged (the process stopped: its pub/sub connection carries
// nothing, not even the canary) and recovers when it resumes, with the
// stream of a job on that master whole.
func TestClusterReadyzCoversEveryShard(t *testing.T) {
	t.Parallel()
	c, rc := onCluster(t, 1, "--canary-interval", "200ms", "--redis-timeout", "500ms")
	g := c.gws[0]
	m := rc.Masters()[1]
	job := ""
	for i := 0; job == ""; i++ { // a job on that master
		if name := fmt.Sprint("wedged-", i); m.Has(protocol.Slot(name)) {
			job = name
		}
	}
	c.register(job)
	s := streamtest.Open(t, c.urls(job, 0), "")
	s.WaitEvents(t, 1)

	m.Server.Pause(t)
	streamtest.Eventually(t, "/readyz 503 with one master stopped", func() bool {
		st, _ := status(g.URL + "/readyz")
		return st == 503
	})
	_, body := status(g.URL + "/readyz")
	t.Logf("/readyz with %s stopped: %s", m.Addr, body)
	m.Server.Resume(t)
	streamtest.Eventually(t, "/readyz 200 again", func() bool {
		st, _ := status(g.URL + "/readyz")
		return st == 200
	})
	errc := c.publishAll([]string{job}, 5, 0, 0)
	waitAll(t, errc, 1)
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, s.Events(), c.history(job))
}

// TestClusterSsepub: ssepub on a redis+cluster:// URL publishes with
// SPUBLISH, so a gateway on the cluster delivers its events live.
func TestClusterSsepub(t *testing.T) {
	t.Parallel()
	c, rc := onCluster(t, 1)
	_, ssepub := gatewaytest.Binaries(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ssepub, append([]string{"--redis-url", rc.URL()}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ssepub %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("ssepub-job", "register")
	s := streamtest.Open(t, c.urls("ssepub-job", 0), "")
	s.WaitEvents(t, 1)
	for i := 1; i <= 3; i++ {
		run("ssepub-job", "progress", "--step", fmt.Sprint(i), "--total", "3")
		s.WaitEvents(t, 1+i) // live: nothing else would bring it before the end
	}
	run("ssepub-job", "complete", "--report-id", "r-1")
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, s.Events(), c.history("ssepub-job"))
}
