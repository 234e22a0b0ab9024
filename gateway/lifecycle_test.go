package gateway_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// commandCalls returns the calls= count of one command in INFO commandstats.
func (e *env) commandCalls(cmd string) int {
	e.t.Helper()
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	prefix := "cmdstat_" + cmd + ":calls="
	for line := range strings.SplitSeq(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// TestOneSubscribePerReconnect: when a pub/sub connection fails, its jobs
// are subscribed again once, by the gateway, not also by go-redis's own
// reconnect of the failed connection.
func TestOneSubscribePerReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("CLIENT KILL and INFO commandstats need a real redis-server")
	}
	cfg := testConfig()
	cfg.PubSubConns = 1
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	jobs := []string{"once-a", "once-b", "once-c"}
	for _, id := range jobs {
		ok(e.pub.Job(id).Register(ctx))
		streamtest.Open(t, []string{g.streamURL(id)}, "").WaitEvents(t, 1)
	}
	reconnects := g.metric(t, "ssegate_redis_reconnects_total")
	e.redis.Do(t, "CONFIG", "RESETSTAT")
	e.redis.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	streamtest.Eventually(t, "pub/sub reconnected", func() bool {
		return g.metric(t, "ssegate_redis_reconnects_total") > reconnects && g.metric(t, "ssegate_subscribed_jobs") == float64(len(jobs))
	})
	// Let anything late arrive before counting.
	g.waitReady(t)
	time.Sleep(3 * testConfig().CanaryInterval)
	// One connection: its canary and its jobs go out in one SUBSCRIBE.
	if got := e.commandCalls("subscribe"); got != 1 {
		t.Errorf("SUBSCRIBE commands after one pub/sub failure = %d, want 1 (canary and %d jobs, once)", got, len(jobs))
	}
	if got := g.metric(t, "ssegate_redis_reconnects_total"); got != reconnects+1 {
		t.Errorf("reconnects = %v, want %v", got, reconnects+1)
	}
}

// TestLingerBeforeUnsubscribe: a job's subscription outlives its last
// client by the linger, so a sole watcher that reconnects costs Redis
// nothing; after the linger it is unsubscribed.
func TestLingerBeforeUnsubscribe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("INFO commandstats needs a real redis-server")
	}
	g := e.gateway(testConfig()) // the default linger, 1s
	ok := must(t)
	ctx := context.Background()
	ok(e.pub.Job("linger").Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL("linger")}, "")
	s.WaitEvents(t, 1)
	e.redis.Do(t, "CONFIG", "RESETSTAT")
	for i := range 3 {
		s.Close()
		streamtest.Eventually(t, "stream closed", func() bool { return g.metric(t, "ssegate_connections") == 0 })
		s = streamtest.Open(t, []string{g.streamURL("linger")}, s.Client.LastEventID())
		ok(e.pub.Job("linger").Progress(ctx, publisher.Step{Step: i + 1, Total: 10}))
		s.WaitEvents(t, 1)
	}
	if sub, unsub := e.commandCalls("subscribe"), e.commandCalls("unsubscribe"); sub != 0 || unsub != 0 {
		t.Errorf("a watcher reconnecting 3 times within the linger cost %d SUBSCRIBE and %d UNSUBSCRIBE, want 0 and 0", sub, unsub)
	}
	s.Close()
	streamtest.Eventually(t, "unsubscribed after the linger", func() bool {
		return g.metric(t, "ssegate_subscribed_jobs") == 0 && e.commandCalls("unsubscribe") == 1
	})
}

// TestConnectionHeader: a response says what the server does with the
// connection. A taken-over stream is closed when it ends, so it says
// "Connection: close" (a proxy's upstream keep-alive pool must not take the
// connection back); a response net/http finishes keeps net/http's own
// answer, never two contradicting values.
func TestConnectionHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	ok(e.pub.Job("conn-running").Register(ctx))
	ok(e.pub.Job("conn-done").Register(ctx))
	ok(e.pub.Job("conn-done").Complete(ctx, "r", nil))
	addr := strings.TrimPrefix(g.URL, "http://")

	head := func(t *testing.T, conn net.Conn, r *bufio.Reader, proto, job string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(conn, "GET /api/reports/"+job+"/stream "+proto+"\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, tc := range []struct {
		proto, job string
		close      bool // the server closes the connection after the response
	}{
		{"HTTP/1.1", "conn-running", true}, // taken over
		{"HTTP/1.0", "conn-running", true},
		{"HTTP/1.1", "conn-done", false}, // net/http's, kept alive
		{"HTTP/1.0", "conn-done", true},
	} {
		t.Run(tc.proto+" "+tc.job, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(wait))
			r := bufio.NewReader(conn)
			resp := head(t, conn, r, tc.proto, tc.job)
			// ReadResponse turns "Connection: close" into resp.Close (and
			// drops it from the header on HTTP/1.1); whatever is left must
			// not say the opposite.
			if resp.Close != tc.close {
				t.Errorf("the response says close=%v, want %v (Connection: %q)", resp.Close, tc.close, resp.Header.Values("Connection"))
			}
			for _, v := range resp.Header.Values("Connection") {
				if tc.close && strings.EqualFold(v, "keep-alive") {
					t.Errorf("Connection: %q on a connection the server closes", resp.Header.Values("Connection"))
				}
			}
			if tc.job == "conn-running" {
				return // the stream stays open; closing the connection ends it
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				return
			}
			if again := head(t, conn, r, tc.proto, tc.job); again.StatusCode != http.StatusOK {
				t.Errorf("second request on a kept-alive connection: %s", again.Status)
			}
		})
	}
}

// TestReadyzAnswersFromState: /readyz answers in milliseconds from state a
// background check keeps, with Redis up or down (a Kubernetes probe times
// out after 1s by default).
func TestReadyzAnswersFromState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("pausing Redis needs a real redis-server")
	}
	g := e.gateway(testConfig())
	probe := func() (int, time.Duration) {
		start := time.Now()
		resp, err := http.Get(g.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	e.redis.Pause(t)
	// A probe that waits on a hung Redis takes the client's read timeout
	// (3s by default); one answered from state takes microseconds. The
	// bound is far from both.
	const bound = 500 * time.Millisecond
	downSeen := false
	for range 30 {
		code, took := probe()
		if took > bound {
			t.Fatalf("/readyz took %v with Redis down, want < %v", took, bound)
		}
		if code == http.StatusServiceUnavailable {
			downSeen = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !downSeen {
		t.Error("/readyz never failed with Redis down")
	}
}

// TestResumeFromZero: Last-Event-ID 0-0 comes before every event, so a
// resume from it gets the whole history, with a reset only when the
// history was really trimmed.
func TestResumeFromZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.gateway(testConfig())
	ok := must(t)
	ctx := context.Background()
	whole := e.pub.Job("zero-whole")
	ok(whole.Register(ctx))
	for i := 1; i <= 3; i++ {
		ok(whole.Progress(ctx, publisher.Step{Step: i, Total: 3}))
	}
	ok(whole.Complete(ctx, "r", nil))
	status, _, body := rawGet(t, g.streamURL("zero-whole"), "Last-Event-ID", "0-0")
	got := decode(t, body)
	if status != http.StatusOK || len(got) == 0 || got[0].Event == "reset" {
		t.Fatalf("resume from 0-0 of a whole history: %d, first %+v", status, got)
	}
	streamtest.AssertExactlyOnce(t, got, e.history("zero-whole"))

	trimmed := publisher.New(e.rdb, publisher.WithMaxLen(5)).Job("zero-trimmed")
	ok(trimmed.Register(ctx))
	for i := 1; i <= 200; i++ {
		ok(trimmed.Progress(ctx, publisher.Step{Step: i, Total: 200}))
	}
	_, _, body = rawGet(t, g.streamURL("zero-trimmed", "timeout=200ms"), "Last-Event-ID", "0-0")
	if got := decode(t, body); len(got) == 0 || got[0].Event != "reset" {
		t.Errorf("resume from 0-0 of a trimmed history: first event %+v, want a reset", got)
	}
}
