package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

var keys = protocol.NewKeys("")

// soak reports whether the long variants run (make soak): more connections
// and events, for hunting rare failures; CI runs the short ones.
func soak() bool { return os.Getenv("SSEGATE_SOAK") != "" }

// cluster is a real redis-server and gateway processes on it.
type cluster struct {
	t     *testing.T
	redis *redistest.Server
	rdb   redis.UniversalClient
	pub   *publisher.Publisher
	gws   []*gatewaytest.Gateway
}

func newCluster(t *testing.T, gateways int, redisOpts []redistest.Option, flags ...string) *cluster {
	t.Helper()
	if redistest.Binary() == "" {
		t.Skip("process-level tests need redis-server")
	}
	srv := redistest.StartReal(t, redisOpts...)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: 5, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	// The tests compare every client's events with the whole history, so
	// the history keeps everything (the soak variants publish 10,000 events).
	c := &cluster{t: t, redis: srv, rdb: rdb, pub: publisher.New(rdb, publisher.WithMaxLen(1_000_000))}
	for range gateways {
		c.gws = append(c.gws, gatewaytest.Start(t, srv.URL(), gatewaytest.WithFlags(flags...)))
	}
	return c
}

// urls lists the job's stream URL on every gateway, starting with first:
// a client tries them in turn, as a load balancer would spread reconnects.
func (c *cluster) urls(job string, first int, query ...string) []string {
	var out []string
	for i := range c.gws {
		g := c.gws[(first+i)%len(c.gws)]
		u := g.URL + "/api/reports/" + job + "/stream"
		if len(query) > 0 {
			u += "?" + strings.Join(query, "&")
		}
		out = append(out, u)
	}
	return out
}

func (c *cluster) history(job string) []redis.XMessage {
	c.t.Helper()
	entries, err := c.rdb.XRange(context.Background(), keys.Events(job), "-", "+").Result()
	if err != nil {
		c.t.Fatal(err)
	}
	return entries
}

func (c *cluster) register(jobs ...string) {
	c.t.Helper()
	for _, j := range jobs {
		if _, err := c.pub.Job(j).Register(context.Background()); err != nil {
			c.t.Fatal(err)
		}
	}
}

// publishAll publishes steps progress events to each job (pausing between
// them), then completes it, one goroutine per job. It returns at once; wait
// on the result.
func (c *cluster) publishAll(jobs []string, steps int, pause time.Duration, pad int) <-chan error {
	errc := make(chan error, len(jobs))
	name := strings.Repeat("x", pad)
	for _, id := range jobs {
		go func() {
			job := c.pub.Job(id)
			ctx := context.Background()
			for s := 1; s <= steps; s++ {
				if _, err := job.Progress(ctx, publisher.Step{Step: s, Total: steps, Name: name}); err != nil {
					errc <- fmt.Errorf("job %s step %d: %w", id, s, err)
					return
				}
				time.Sleep(pause)
			}
			_, err := job.Complete(ctx, "r-"+id, json.RawMessage(`{"ok":true}`))
			errc <- err
		}()
	}
	return errc
}

// watchJobs opens n clients, client i on job i mod len(jobs) starting at
// gateway i mod the gateway count, and waits until each has its snapshot.
func (c *cluster) watchJobs(jobs []string, n int) []*streamtest.Stream {
	c.t.Helper()
	var clients []*streamtest.Stream
	for i := range n {
		clients = append(clients, streamtest.Open(c.t, c.urls(jobs[i%len(jobs)], i%len(c.gws)), ""))
	}
	for _, s := range clients {
		s.WaitEvents(c.t, 1)
	}
	return clients
}

// checkAll waits until every client (opened by watchJobs) ended, checks it
// saw its job's history exactly once, and returns how many reconnected.
func (c *cluster) checkAll(jobs []string, clients []*streamtest.Stream) (moved int) {
	c.t.Helper()
	for i, s := range clients {
		if err := s.WaitDone(c.t); err != nil {
			c.t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(c.t, s.Events(), c.history(jobs[i%len(jobs)]))
		if s.Client.Connects() > 1 {
			moved++
		}
	}
	return moved
}

func waitAll(t *testing.T, errc <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(streamtest.Wait):
			t.Fatal("publishers did not finish")
		}
	}
}

func jobNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

func status(url string, header ...string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func metric(t *testing.T, g *gatewaytest.Gateway, name string) float64 {
	t.Helper()
	v, err := g.Metric(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// assertTransientRefusal checks both forms of a transient refusal.
func assertTransientRefusal(t *testing.T, url, code string) {
	t.Helper()
	st, body := status(url)
	if st != 503 || !strings.Contains(body, `"code":"`+code+`"`) {
		t.Errorf("plain client: %d %q; want 503 %s", st, body, code)
	}
	st, body = status(url, "Accept", "text/event-stream")
	if st != 200 || !strings.Contains(body, "retry: ") || strings.Contains(body, "data:") {
		t.Errorf("EventSource client: %d %q; want a retry-only 200 stream", st, body)
	}
}

// Scenario 1: SIGTERM one gateway while 200 clients stream 20 jobs.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, nil, "--shutdown-grace", "1500ms", "--shutdown-timeout", "6s")
	jobs := jobNames("roll", 20)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 200)
	errc := c.publishAll(jobs, 40, 50*time.Millisecond, 0)
	time.Sleep(500 * time.Millisecond) // mid-stream

	g := c.gws[0]
	start := time.Now()
	g.Signal(syscall.SIGTERM)
	streamtest.Eventually(t, "readyz failing at once", func() bool {
		st, body := status(g.URL + "/readyz")
		return st == 503 && strings.Contains(body, "DRAINING")
	})
	assertTransientRefusal(t, g.URL+"/api/reports/"+jobs[0]+"/stream", "DRAINING")
	code, err := g.Wait(15 * time.Second)
	took := time.Since(start)
	if err != nil || code != 0 {
		t.Errorf("gateway exit after SIGTERM: code %d, %v", code, err)
	}
	if took > 6*time.Second+time.Second {
		t.Errorf("gateway took %v to exit; the shutdown timeout is 6s", took)
	}

	waitAll(t, errc, len(jobs))
	moved := c.checkAll(jobs, clients)
	if moved < 50 {
		t.Errorf("only %d clients reconnected; the ~100 on the stopped gateway should have", moved)
	}
	t.Logf("SIGTERM to exit %v; %d clients resumed on the other gateway", took.Round(time.Millisecond), moved)
}

// Scenario 2: SIGKILL a gateway mid-stream.
func TestCrash(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, nil)
	jobs := jobNames("crash", 10)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 60)
	errc := c.publishAll(jobs, 40, 40*time.Millisecond, 0)
	time.Sleep(400 * time.Millisecond)
	c.gws[0].Kill()
	waitAll(t, errc, len(jobs))
	if moved := c.checkAll(jobs, clients); moved < 20 {
		t.Errorf("only %d clients reconnected after the crash; the 30 on it should have", moved)
	}
}

// Scenario 3: the gateways' pub/sub connections are killed several times
// during a 1,000-event job.
func TestPubSubCut(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, nil)
	c.register("cut")
	clients := c.watchJobs([]string{"cut"}, 20)
	steps, kills := 1000, 5
	if soak() {
		steps, kills = 10000, 50
	}
	errc := c.publishAll([]string{"cut"}, steps, time.Millisecond, 0)
	for range kills {
		time.Sleep(150 * time.Millisecond)
		c.redis.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	waitAll(t, errc, 1)
	c.checkAll([]string{"cut"}, clients)
	var reconnects, clientReconnects float64
	for _, g := range c.gws {
		reconnects += metric(t, g, "ssegate_redis_reconnects_total")
		clientReconnects += metric(t, g, "ssegate_connections_opened_total")
	}
	if reconnects < 2 {
		t.Errorf("ssegate_redis_reconnects_total = %v across the gateways after 5 kills", reconnects)
	}
	t.Logf("pub/sub reconnects %v; client streams opened %v for 20 clients (extra ones are resumes)", reconnects, clientReconnects)
}

// Scenario 4: redis-server stops and starts again on the same port, with
// its data on disk.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2, []redistest.Option{redistest.WithPersistence()}, "--heartbeat", "200ms")
	jobs := jobNames("rr", 5)
	c.register(jobs...)
	clients := c.watchJobs(jobs, 20)
	ctx := context.Background()
	publish := func(from, to int) {
		t.Helper()
		for _, id := range jobs {
			for s := from; s <= to; s++ {
				if _, err := c.pub.Job(id).Progress(ctx, publisher.Step{Step: s, Total: 40}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(1, 20)
	for _, s := range clients {
		s.WaitEvents(t, 21)
	}

	c.redis.Stop()
	for _, g := range c.gws {
		streamtest.Eventually(t, "readyz failing with Redis down", func() bool {
			st, body := status(g.URL + "/readyz")
			return st == 503 && strings.Contains(body, "REDIS_UNAVAILABLE")
		})
		assertTransientRefusal(t, g.URL+"/api/reports/"+jobs[0]+"/stream", "REDIS_UNAVAILABLE")
	}
	beats := make([]int, len(clients))
	for i, s := range clients {
		beats[i] = s.Heartbeats()
	}
	streamtest.Eventually(t, "heartbeats flowing while Redis is down", func() bool {
		for i, s := range clients {
			if s.Heartbeats() < beats[i]+2 {
				return false
			}
		}
		return true
	})

	c.redis.Restart()
	for _, g := range c.gws {
		streamtest.Eventually(t, "readyz back", func() bool { st, _ := status(g.URL + "/readyz"); return st == 200 })
	}
	publish(21, 40)
	for _, id := range jobs {
		if _, err := c.pub.Job(id).Complete(ctx, "r", nil); err != nil {
			t.Fatal(err)
		}
	}
	if moved := c.checkAll(jobs, clients); moved != 0 {
		t.Errorf("%d clients reconnected; streams should stay open through the Redis restart", moved)
	}
}

// latencies records, per event ID, when it was published and when each
// client received it.
type latencies struct {
	mu        sync.Mutex
	published map[string]time.Time
	samples   []time.Duration
}

func (l *latencies) add(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.published[id]; ok {
		l.samples = append(l.samples, at.Sub(p))
	}
}

func (l *latencies) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.samples)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// deliveryRun streams steps events of job to n normal clients and returns
// their latencies. extra runs after the normal clients are up.
func deliveryRun(t *testing.T, c *cluster, job string, n, steps int, extra func()) (*latencies, []*streamtest.Stream) {
	t.Helper()
	c.register(job)
	lat := &latencies{published: map[string]time.Time{}}
	var clients []*streamtest.Stream
	for range n {
		clients = append(clients, streamtest.Open(t, c.urls(job, 0), ""))
	}
	for _, s := range clients {
		s.WaitEvents(t, 1)
	}
	if extra != nil {
		extra()
	}
	// Latency is measured by watching each client's event count: a tight
	// poller per client would skew what it measures, so the clients record
	// arrival themselves through a wrapping check below.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range clients {
		wg.Go(func() {
			seen := 1
			for {
				ev := s.Events()
				now := time.Now()
				for _, m := range ev[seen:] {
					lat.add(m.ID, now)
				}
				seen = len(ev)
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
	ctx := context.Background()
	name := strings.Repeat("x", 2048)
	for s := 1; s <= steps; s++ {
		id, err := c.pub.Job(job).Progress(ctx, publisher.Step{Step: s, Total: steps, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		lat.mu.Lock()
		lat.published[id] = time.Now()
		lat.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.pub.Job(job).Complete(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	want := c.history(job)
	for _, s := range clients {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), want)
		if s.Client.Connects() != 1 {
			t.Errorf("a normal client reconnected (%d connections)", s.Client.Connects())
		}
	}
	close(stop)
	wg.Wait()
	return lat, clients
}

// rawStream opens a stream on a TCP connection with a tiny receive buffer,
// for clients that read slowly or not at all.
func rawStream(t *testing.T, url string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	conn, err := d.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	return conn
}

// received parses what a raw stream got before the server cut it.
func received(t *testing.T, conn net.Conn, r io.Reader) ([]event.Message, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(streamtest.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	dec := event.NewDecoder(strings.NewReader(string(body)))
	var got []event.Message
	for {
		m, err := dec.Next()
		if err != nil {
			return got, dec.LastEventID()
		}
		got = append(got, m)
	}
}

// trickle reads one byte a second from conn until stopped, keeping what it
// read.
type trickle struct {
	conn net.Conn
	got  bytes.Buffer
	stop chan struct{}
	done chan struct{}
}

func startTrickle(conn net.Conn) *trickle {
	tr := &trickle{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		b := make([]byte, 1)
		for {
			select {
			case <-tr.stop:
				return
			case <-time.After(time.Second):
			}
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _ := conn.Read(b); n == 1 {
				tr.got.WriteByte(b[0])
			}
		}
	}()
	return tr
}

// rest stops the trickle and returns everything the connection carried:
// what was read, then the rest.
func (tr *trickle) rest() io.Reader {
	close(tr.stop)
	<-tr.done
	return io.MultiReader(bytes.NewReader(tr.got.Bytes()), tr.conn)
}

// Scenario 5: one client that never reads and one that reads a byte a
// second, among 100 normal clients.
func TestSlowAndStalledClients(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, nil, "--send-buffer", "32768", "--write-timeout", "2s", "--max-connections-per-job", "0")
	g := c.gws[0]

	base, _ := deliveryRun(t, c, "calm", 100, 100, nil)

	var stalled, slow net.Conn
	var slowReader *trickle
	withStalled, _ := deliveryRun(t, c, "stormy", 100, 100, func() {
		stalled = rawStream(t, g.URL+"/api/reports/stormy/stream")
		slow = rawStream(t, g.URL+"/api/reports/stormy/stream")
		slowReader = startTrickle(slow)
		streamtest.Eventually(t, "102 streams open", func() bool { return metric(t, g, "ssegate_connections") == 102 })
	})

	streamtest.Eventually(t, "both slow clients cut", func() bool {
		return metric(t, g, `ssegate_connections_closed_total{reason="slow_client"}`) == 2
	})
	want := c.history("stormy")
	for _, cl := range []struct {
		name string
		conn net.Conn
		r    io.Reader
	}{{"stalled", stalled, stalled}, {"slow", slow, slowReader.rest()}} {
		got, last := received(t, cl.conn, cl.r)
		if len(got) >= len(want) {
			t.Fatalf("%s client got all %d events; it should have been cut", cl.name, len(got))
		}
		rest := streamtest.Open(t, []string{g.URL + "/api/reports/stormy/stream"}, last)
		if err := rest.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, append(got, rest.Events()...), want)
		t.Logf("%s client: %d events before the cut, %d after resuming", cl.name, len(got), len(rest.Events()))
	}

	p50, p99 := base.percentile(0.5), base.percentile(0.99)
	q50, q99 := withStalled.percentile(0.5), withStalled.percentile(0.99)
	r50, r99 := float64(q50)/float64(max(p50, time.Microsecond)), float64(q99)/float64(max(p99, time.Microsecond))
	t.Logf("normal clients' latency alone p50 %v p99 %v; with the stalled ones p50 %v p99 %v; ratio p50 %.2f p99 %.2f",
		p50, p99, q50, q99, r50, r99)
	// Not a timing target: a dispatcher that waited on the stalled client
	// would show seconds (the write timeout), a thousand times the base.
	if r50 > 20 {
		t.Errorf("the stalled clients slowed the others down: p50 %v -> %v", p50, q50)
	}
}

// Scenario 6: 2,000 connects and abrupt disconnects across 500 jobs.
func TestChurn(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, nil)
	g := c.gws[0]
	jobs := jobNames("churn", 500)
	c.register(jobs...)
	// Warm up one stream so lazily started goroutines are in the baseline.
	warm := streamtest.Open(t, c.urls(jobs[0], 0), "")
	warm.WaitEvents(t, 1)
	warm.Close()
	streamtest.Eventually(t, "warm-up stream closed", func() bool { return metric(t, g, "ssegate_connections") == 0 })
	baseline := metric(t, g, "go_goroutines")

	addr := strings.TrimPrefix(g.URL, "http://")
	perWorker := 40 // 50 workers: 2,000 connections
	if soak() {
		perWorker = 400
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for w := range 50 {
		wg.Go(func() {
			for i := range perWorker {
				job := jobs[(w*perWorker+i)%len(jobs)]
				if err := churnOnce(addr, job, i%4 == 0); err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed, first: %s", len(failures), 50*perWorker, failures[0])
	}
	streamtest.Eventually(t, "gauges back to 0", func() bool {
		return metric(t, g, "ssegate_connections") == 0 && metric(t, g, "ssegate_subscribed_jobs") == 0
	})
	streamtest.Eventually(t, "no job channel subscribed in Redis", func() bool {
		return len(c.redis.Do(t, "PUBSUB", "CHANNELS", "ssegate:{*}:live").([]any)) == 0
	})
	for _, j := range jobs[:5] {
		if n := c.redis.Do(t, "PUBSUB", "NUMSUB", keys.Live(j)).([]any)[1].(int64); n != 0 {
			t.Errorf("PUBSUB NUMSUB %s = %d", j, n)
		}
	}
	streamtest.Eventually(t, "goroutines back to the baseline", func() bool {
		return metric(t, g, "go_goroutines") <= baseline+2
	})
	opened := metric(t, g, "ssegate_connections_opened_total")
	closed := 0.0
	for _, r := range []string{"client_gone", "finished", "timeout", "slow_client", "shutdown", "resync", "redis_error"} {
		closed += metric(t, g, `ssegate_connections_closed_total{reason="`+r+`"}`)
	}
	if opened < 1000 || closed != opened {
		t.Errorf("streams opened %v, closed %v; every opened stream must be closed", opened, closed)
	}
	t.Logf("goroutines: baseline %v, after %v; streams opened %v", baseline, metric(t, g, "go_goroutines"), opened)
}

// churnOnce opens a stream and resets the connection: right after the
// request (early), or after the first event.
func churnOnce(addr, job string, early bool) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	tc := conn.(*net.TCPConn)
	defer func() {
		_ = tc.SetLinger(0) // close with RST, like a crashed client
		_ = tc.Close()
	}()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /api/reports/"+job+"/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return err
	}
	if early {
		return nil
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	dec := event.NewDecoder(resp.Body)
	m, err := dec.Next()
	if err != nil {
		return err
	}
	if m.Event != "status" {
		return fmt.Errorf("first event %q", m.Event)
	}
	return nil
}
