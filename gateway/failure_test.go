package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

// stalledConn opens a stream over a TCP connection with a tiny receive
// buffer and never reads from it: a client that stopped reading.
func stalledConn(t *testing.T, url string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	host := strings.TrimPrefix(url, "http://")
	path := "/"
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host, path = host[:i], host[i:]
	}
	conn, err := d.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestStalledClientIsCutAndResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.SendBuffer = 32 << 10 // else the kernel absorbs megabytes for a stalled reader
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("stall")
	ok(job.Register(ctx))

	stalled := stalledConn(t, g.streamURL("stall"))
	var normal []*streamtest.Stream
	for range 20 {
		normal = append(normal, streamtest.Open(t, []string{g.streamURL("stall")}, ""))
	}
	for _, s := range normal {
		s.WaitEvents(t, 1)
	}
	streamtest.Eventually(t, "all 21 streams open", func() bool { return g.metric(t, "ssegate_connections") == 21 })

	// Big events fill the stalled client's socket buffers fast; 500 a
	// second is easy for the others.
	name := strings.Repeat("x", 4096)
	const steps = 300
	for s := 1; s <= steps; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: steps, Name: name}))
		time.Sleep(2 * time.Millisecond)
	}
	streamtest.Eventually(t, "stalled client cut", func() bool {
		return g.metric(t, "ssegate_connections_closed_total", "reason", "slow_client") >= 1
	})
	ok(job.Complete(ctx, "r", nil))
	want := e.history("stall")
	for _, s := range normal {
		if err := s.WaitDone(t); err != nil {
			t.Fatal(err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), want)
	}

	// What the stalled client had received before the cut, as a browser
	// would have parsed it. Less than everything: the server cut it.
	_ = stalled.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body) // ends early: the server cut the connection
	dec := event.NewDecoder(strings.NewReader(string(body)))
	var got []event.Message
	for {
		m, err := dec.Next()
		if err != nil {
			break
		}
		got = append(got, m)
	}
	if len(got) == 0 || len(got) >= len(want) {
		t.Fatalf("stalled client got %d of %d events before the cut", len(got), len(want))
	}
	// It resumes from its last event ID and ends with everything, once.
	rest := streamtest.Open(t, []string{g.streamURL("stall")}, dec.LastEventID())
	if err := rest.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, append(got, rest.Events()...), want)
	t.Logf("stalled client got %d events before the cut and %d after resuming; slow cuts %v, streams opened %v (21 at the start, 1 resume)",
		len(got), len(rest.Events()), g.metric(t, "ssegate_slow_client_disconnects_total"), g.metric(t, "ssegate_connections_opened_total"))
}

func TestMetricsEndpointCountsStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	must(t)(e.pub.Job("m").Register(context.Background()))
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(g.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "ssegate_connections ") {
				return strings.TrimPrefix(line, "ssegate_connections ")
			}
		}
		t.Fatalf("no ssegate_connections in /metrics:\n%s", b)
		return ""
	}
	defer http.DefaultClient.CloseIdleConnections()
	var streams []*streamtest.Stream
	for n := 1; n <= 7; n++ {
		s := streamtest.Open(t, []string{g.streamURL("m")}, "")
		s.WaitEvents(t, 1)
		streams = append(streams, s)
		if got := scrape(); got != strconv.Itoa(n) {
			t.Fatalf("with %d open streams /metrics says ssegate_connections %s", n, got)
		}
	}
	for _, s := range streams {
		s.Close()
	}
	streamtest.Eventually(t, "gauge back to 0", func() bool { return scrape() == "0" })
	resp, err := http.Get(g.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		"ssegate_connections_opened_total", "ssegate_connections_closed_total", "ssegate_subscribed_jobs",
		"ssegate_events_sent_total", "ssegate_events_replayed_total", "ssegate_slow_client_disconnects_total",
		"ssegate_delivery_latency_seconds_bucket", "ssegate_redis_errors_total", "ssegate_redis_reconnects_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(string(b), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// refusal checks a transient refusal both ways: 503 JSON with Retry-After
// for plain clients, a retry-only 200 stream for EventSource clients.
func refusal(t *testing.T, url, code, reason string, retry time.Duration) {
	t.Helper()
	status, h, body := rawGet(t, url)
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || status != 503 || e.Code != code || h.Get("Retry-After") == "" {
		t.Errorf("plain client: %d %q Retry-After %q; want 503 %s", status, body, h.Get("Retry-After"), code)
	}
	status, h, body = rawGet(t, url, "Accept", "text/event-stream", "Last-Event-ID", "5-0")
	var hint time.Duration
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "retry: "); ok {
			ms, _ := strconv.Atoi(v)
			hint = time.Duration(ms) * time.Millisecond
		}
	}
	ceiling := 2 * retry
	if reason == "connection_limit" || reason == "job_connection_limit" {
		ceiling = 2 * time.Minute // grows with the refusals of the last second
	}
	if status != 200 || h.Get("Content-Type") != "text/event-stream" || !strings.Contains(body, ": "+reason) ||
		hint < retry || hint >= ceiling || strings.Contains(body, "data:") || !strings.Contains(body, "id: 5-0\n") {
		t.Errorf("EventSource client: %d %q; want a retry-only stream for %s (hint in [%v, %v), resume point kept)", status, body, reason, retry, ceiling)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxConnections = 3
	cfg.MaxConnectionsPerJob = 2
	cfg.Retry = time.Second
	g := e.gateway(cfg)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		must(t)(e.pub.Job(id).Register(ctx))
	}
	a1 := streamtest.Open(t, []string{g.streamURL("a")}, "")
	a2 := streamtest.Open(t, []string{g.streamURL("a")}, "")
	a1.WaitEvents(t, 1)
	a2.WaitEvents(t, 1)
	refusal(t, g.streamURL("a"), "TOO_MANY_JOB_CONNECTIONS", "job_connection_limit", time.Second)
	b1 := streamtest.Open(t, []string{g.streamURL("b")}, "")
	b1.WaitEvents(t, 1)
	refusal(t, g.streamURL("b"), "TOO_MANY_CONNECTIONS", "connection_limit", time.Second)
	a1.Close()
	streamtest.Eventually(t, "slot freed", func() bool { return g.metric(t, "ssegate_connections") == 2 })
	streamtest.Open(t, []string{g.streamURL("b")}, "").WaitEvents(t, 1)
	if got := g.metric(t, "ssegate_refused_streams_total", "reason", "connection_limit"); got != 2 {
		t.Errorf("refused{connection_limit} = %v, want 2", got)
	}
}

func TestRedisDownAtStartThenUp(t *testing.T) {
	t.Parallel()
	if redistest.Binary() == "" {
		t.Skip("needs redis-server")
	}
	srv := redistest.StartReal(t)
	srv.Stop() // the port is known, nothing listens on it
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	cfg := testConfig()
	cfg.Retry = 100 * time.Millisecond
	cfg.JoinTimeout = 300 * time.Millisecond
	cfg.RedisTimeout = 300 * time.Millisecond
	g := startGatewayNotReady(t, cfg, rdb)

	status, _, body := rawGet(t, g.URL+"/readyz")
	if status != 503 || !strings.Contains(body, "REDIS_UNAVAILABLE") {
		t.Errorf("readyz with Redis down: %d %q", status, body)
	}
	refusal(t, g.streamURL("any"), "REDIS_UNAVAILABLE", "redis_unavailable", 100*time.Millisecond)
	if status, _, body := rawGet(t, g.URL+"/healthz"); status != 200 {
		t.Errorf("healthz with Redis down: %d %q", status, body)
	}

	srv.Restart()
	g.waitReady(t)
	pub := publisher.New(rdb)
	must(t)(pub.Job("up").Register(context.Background()))
	s := streamtest.Open(t, []string{g.streamURL("up")}, "")
	s.WaitEvents(t, 1)
	must(t)(pub.Job("up").Complete(context.Background(), "r", nil))
	if err := s.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	if got := g.metric(t, "ssegate_redis_errors_total", "op", "state"); got < 1 {
		t.Errorf("redis_errors{state} = %v while Redis was down", got)
	}
}

// startGatewayNotReady is startGateway without waiting for readiness.
func startGatewayNotReady(t *testing.T, cfg gateway.Config, rdb redis.UniversalClient) *gw {
	t.Helper()
	return serveGateway(t, cfg, rdb, false)
}

func TestDrainOnShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.ShutdownGrace = 600 * time.Millisecond
	cfg.Retry = 200 * time.Millisecond
	g := e.gateway(cfg)
	must(t)(e.pub.Job("d").Register(context.Background()))

	const n = 10
	type result struct {
		body  string
		ended time.Time
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, _, body := rawGet(t, g.streamURL("d"))
			results <- result{body, time.Now()}
		})
	}
	streamtest.Eventually(t, "streams open", func() bool { return g.metric(t, "ssegate_connections") == n })

	start := time.Now()
	stopped := make(chan struct{})
	go func() { g.stop(); close(stopped) }()
	streamtest.Eventually(t, "readyz failing while draining", func() bool {
		status, _, body := rawGet(t, g.URL+"/readyz")
		return status == 503 && strings.Contains(body, "DRAINING")
	})
	refusal(t, g.streamURL("d"), "DRAINING", "draining", 200*time.Millisecond)

	wg.Wait()
	close(results)
	var first, last time.Time
	for r := range results {
		if !strings.Contains(r.body, ": shutdown\n") || !strings.Contains(r.body, "retry: ") {
			t.Errorf("stream ended without a retry hint: %q", r.body)
		}
		if first.IsZero() || r.ended.Before(first) {
			first = r.ended
		}
		if r.ended.After(last) {
			last = r.ended
		}
	}
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("Serve did not return")
	}
	// Waves: the last stream closes well after the first (10 waves over 600 ms).
	if spread := last.Sub(first); spread < 200*time.Millisecond {
		t.Errorf("streams closed within %v of each other: not spread in waves", spread)
	}
	if took := time.Since(start); took > cfg.ShutdownGrace+5*time.Second {
		t.Errorf("shutdown took %v, beyond ShutdownTimeout", took)
	}
}

func TestReadinessFailsWhenPubSubIsWedged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("CLIENT PAUSE needs a real redis-server")
	}
	g := e.gateway(testConfig())
	// PUBLISH blocks under CLIENT PAUSE WRITE while PING still answers: the
	// canary stops arriving, and readiness must notice.
	e.redis.Do(t, "CLIENT", "PAUSE", "1500", "WRITE")
	streamtest.Eventually(t, "readyz failing", func() bool {
		status, _, body := rawGet(t, g.URL+"/readyz")
		return status == 503 && strings.Contains(body, "NOT_READY")
	})
	if err := e.rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING during the pause: %v", err)
	}
	g.waitReady(t) // back once the pause ends
}
