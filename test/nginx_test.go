package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/nginxtest"
	"github.com/ssegate/ssegate/test/streamtest"
)

// nginxConf is the file under test: the one docker-compose.yml mounts and
// docs/operations.md tells people to use.
func nginxConf() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "deploy", "nginx.conf")
}

// TestNginxConfShape checks, without running nginx, that deploy/nginx.conf
// still says what SSE needs (the running test below shows it works) and
// that the test's substitution finds its upstream and listen lines.
func TestNginxConfShape(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(nginxConf())
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	got, err := nginxtest.Render(conf, []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"server 127.0.0.1:1 max_fails=1 fail_timeout=5s;", "server 127.0.0.1:3 max_fails=1 fail_timeout=5s;", "listen 127.0.0.1:9;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "gateway-1") || strings.Contains(got, "listen 80") {
		t.Errorf("rendered config still names the compose hosts or port:\n%s", got)
	}

	stream := regexp.MustCompile(`(?s)location ~ \^/api/reports/\[\^/\]\+/stream\$ \{(.*?)\}`).FindStringSubmatch(conf)
	if stream == nil {
		t.Fatal("deploy/nginx.conf has no stream location `location ~ ^/api/reports/[^/]+/stream$`")
	}
	for _, want := range []string{"proxy_buffering off;", "proxy_cache off;", "gzip off;", "proxy_pass http://ssegate;"} {
		if !strings.Contains(stream[1], want) {
			t.Errorf("the stream location lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`proxy_read_timeout (\d+)s;`).FindStringSubmatch(stream[1]); m == nil {
		t.Error("the stream location sets no proxy_read_timeout in seconds")
	} else if d, _ := time.ParseDuration(m[1] + "s"); d <= 30*time.Second {
		t.Errorf("the stream location's proxy_read_timeout %v is not above the gateway's default heartbeat (30s)", d)
	}
	for _, want := range []string{
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_next_upstream error timeout http_503;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("deploy/nginx.conf lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*keepalive \d+;`).MatchString(conf) {
		t.Error("the upstream block keeps no idle connections (keepalive N;)")
	}
	// The access token of a browser's stream is in its query string
	// (no-tokens-in-logs below shows it kept out of the logs).
	if !regexp.MustCompile(`(?m)^[ \t]+access_log[ \t]+\S+[ \t]+ssegate;`).MatchString(conf) {
		t.Error("the server block sets no `access_log PATH ssegate;`: the including nginx.conf's format (the whole request line, query and token included) would apply")
	}
	if f := regexp.MustCompile(`(?s)log_format ssegate (.*?);`).FindStringSubmatch(conf); f == nil {
		t.Error("deploy/nginx.conf defines no `log_format ssegate`")
	} else if v := regexp.MustCompile(`\$(request|request_uri|args|query_string|arg_\w+|http_referer)\b`).FindString(f[1]); v != "" {
		t.Errorf("log_format ssegate logs %s, which can hold a query string and with it an access token", v)
	}
	if regexp.MustCompile(`proxy_next_upstream[ \t][^;]*\b(off|non_idempotent)\b`).MatchString(conf) {
		t.Error("proxy_next_upstream: off turns a stopped gateway into a 502 that ends an EventSource for good; non_idempotent would retry POSTs (a publish twice)")
	}
}

// TestNginx runs deploy/nginx.conf in a real nginx in front of two real
// gateways on one real Redis. Four clients stream a job through nginx; the
// gateway serving the first one gets SIGTERM mid-job; the job goes on and
// completes. Every client on the stopped gateway must resume through nginx
// on the other one, each with every event exactly once; nginx must never
// answer a 5xx (an EventSource gives up on one), and must pass a request
// that meets the draining gateway on to the other. First, the JSON API must
// reuse upstream connections (keepalive), read from the sockets nginx holds.
func TestNginx(t *testing.T) {
	t.Parallel()
	nginxtest.Require(t)
	start := time.Now()
	c := newCluster(t, 2, nil, "--shutdown-grace", "1s", "--shutdown-timeout", "5s")
	gwAddrs := []string{c.gws[0].Addr, c.gws[1].Addr}
	ngx := nginxtest.Start(t, nginxConf(), gwAddrs)

	job := "nginx-job"
	c.register(job)

	t.Run("keepalive", func(t *testing.T) {
		// Six snapshot requests, one after the other, round-robin over the
		// two gateways. With upstream keep-alive nginx holds one idle
		// connection per gateway and reuses it: at most two distinct
		// upstream connections in all. Without it nginx would open six and
		// close each (none held after a request).
		client := &http.Client{Timeout: 10 * time.Second}
		seen := map[string]bool{}
		for i := range 6 {
			resp, err := client.Get(ngx.URL + "/api/reports/" + job)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"pending"`) {
				t.Fatalf("snapshot %d through nginx: %d %s", i, resp.StatusCode, body)
			}
			// nginx puts the connection back in its pool as it finishes the
			// request, about when the client has the body.
			var held []string
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				held, err = ngx.UpstreamConns(gwAddrs...)
				if err != nil {
					t.Fatal(err)
				}
				if len(held) > 0 || time.Now().After(deadline) {
					break
				}
			}
			if len(held) == 0 {
				t.Fatalf("after snapshot %d nginx holds no upstream connection: no keepalive", i)
			}
			for _, l := range held {
				seen[l] = true
			}
		}
		var used []string
		for _, e := range ngx.Access() {
			if e.URI == "/api/reports/"+job {
				used = append(used, e.Upstream)
			}
		}
		slices.Sort(used)
		if used = slices.Compact(used); len(used) != 2 {
			t.Errorf("the snapshots went to upstreams %v; want both gateways (round-robin)", used)
		}
		if len(seen) > len(gwAddrs) {
			t.Errorf("6 requests used %d upstream connections (%v); want at most %d: keepalive does not reuse them", len(seen), seen, len(gwAddrs))
		}
		t.Logf("6 snapshot requests through nginx used %d upstream connections", len(seen))
	})

	t.Run("no-tokens-in-logs", func(t *testing.T) {
		// An EventSource cannot send headers, so its token travels in the
		// query string: the proxy's logs must not keep it.
		const secret = "eyJ-not-a-real-token-7f3a9c"
		path := "/api/reports/nginx-no-such-job/stream"
		resp, err := http.Get(ngx.URL + path + "?access_token=" + secret)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// The test's own log (LogFormat, with the query) shows when nginx
		// has logged the request everywhere.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if slices.ContainsFunc(ngx.Access(), func(e nginxtest.Entry) bool { return strings.HasPrefix(e.URI, path+"?") }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nginx never logged %s", path)
			}
		}
		logged := false
		for name, text := range ngx.Logs() {
			for _, line := range strings.Split(text, "\n") {
				if strings.Contains(line, secret) {
					t.Errorf("%s keeps the access token: %s", name, line)
				}
				if strings.Contains(line, path) {
					logged = true
				}
			}
		}
		if !logged {
			t.Errorf("no log of nginx records the request for %s: %v", path, ngx.Logs())
		}
	})

	// The stream: opened through nginx from the job's start, so its events
	// are the whole history. Three more clients of the job are spread over
	// both gateways by nginx's round-robin.
	streamURL := ngx.URL + "/api/reports/" + job + "/stream"
	s := streamtest.Open(t, []string{streamURL}, "")
	s.WaitEvents(t, 1)
	serving, other := -1, -1
	streamtest.Eventually(t, "the stream open on one gateway", func() bool {
		a, b := metric(t, c.gws[0], "ssegate_connections"), metric(t, c.gws[1], "ssegate_connections")
		switch {
		case a == 1 && b == 0:
			serving, other = 0, 1
		case a == 0 && b == 1:
			serving, other = 1, 0
		default:
			return false
		}
		return true
	})
	t.Logf("the stream is on gateway %d (%s)", serving, c.gws[serving].Addr)
	clients := []*streamtest.Stream{s}
	for range 3 {
		o := streamtest.Open(t, []string{streamURL}, "")
		o.WaitEvents(t, 1)
		clients = append(clients, o)
	}
	streamtest.Eventually(t, "4 streams open", func() bool {
		return metric(t, c.gws[0], "ssegate_connections")+metric(t, c.gws[1], "ssegate_connections") == 4
	})
	onStopped := metric(t, c.gws[serving], "ssegate_connections")

	const steps = 40
	pj := c.pub.Job(job)
	ctx, cancel := context.WithTimeout(context.Background(), streamtest.Wait)
	defer cancel()
	publish := func(from, to int) error {
		for i := from; i <= to; i++ {
			if _, err := pj.Progress(ctx, publisher.Step{Step: i, Total: steps, Name: fmt.Sprintf("step %d", i)}); err != nil {
				return err
			}
			time.Sleep(25 * time.Millisecond)
		}
		return nil
	}
	if err := publish(1, 10); err != nil {
		t.Fatal(err)
	}
	for _, cl := range clients {
		cl.WaitEvents(t, 11) // register status + 10 steps, live through nginx before the stop
	}

	// Stop the serving gateway mid-job, and keep publishing while it drains
	// and exits: its streams are closed with a retry hint, and the clients'
	// reconnects through nginx meet a draining gateway (a retry-only
	// answer) or a closed port (nginx passes the request on) until they
	// reach the other one.
	stopped := c.gws[serving]
	stopAt := time.Now()
	stopped.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- publish(11, 30) }()
	// While it drains (its last streams close over the 1s grace), it
	// refuses new streams: EventSource clients get a retry-only 200, plain
	// clients 503 DRAINING, which nginx passes on to the other gateway
	// (http_503), leaving the draining one out for fail_timeout. A few
	// plain stream requests, round-robin, until one met the drain.
	streamtest.Eventually(t, "the stopped gateway draining", func() bool {
		st, body := status(stopped.URL + "/readyz")
		return st == 503 && strings.Contains(body, "DRAINING")
	})
	for i := 0; i < 10 && !slices.ContainsFunc(ngx.Access(), drainPassedOn(stopped.Addr)); i++ {
		if st, err := streamStatus(streamURL); st != 200 {
			t.Errorf("a plain stream request through nginx during the drain: %d %v", st, err)
		}
	}
	code, err := stopped.Wait(15 * time.Second)
	exitAfter := time.Since(stopAt)
	if err != nil || code != 0 {
		t.Errorf("gateway exit after SIGTERM: code %d, %v", code, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	// Two snapshots after the exit: if round-robin sends one to the
	// stopped gateway's closed port (it is left out for fail_timeout once it
	// failed), nginx must pass it on rather than answer 502.
	for range 2 {
		if st, body := status(ngx.URL + "/api/reports/" + job); st != 200 {
			t.Errorf("snapshot through nginx after the stop: %d %s", st, body)
		}
	}
	if err := publish(31, steps); err != nil {
		t.Fatal(err)
	}
	if _, err := pj.Complete(ctx, "r-nginx", json.RawMessage(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}

	history := c.history(job)
	lost, dup, moved := 0, 0, 0
	for i, cl := range clients {
		if err := cl.WaitDone(t); err != nil {
			t.Fatalf("client %d ended with %v; want the complete event", i, err)
		}
		got := cl.Events()
		streamtest.AssertExactlyOnce(t, got, history)
		l, d := countLostDup(got, history)
		lost, dup = lost+l, dup+d
		if cl.Client.Connects() > 1 {
			moved++
		}
	}
	if connects := s.Client.Connects(); connects < 2 {
		t.Errorf("the client connected %d times; the gateway stop should have made it reconnect", connects)
	}
	if n := metric(t, c.gws[other], "ssegate_connections_opened_total"); n < 4 {
		t.Errorf("gateway %d opened %v streams; want its own %v and the %v resumed from the stopped one", other, n, 4-onStopped, onStopped)
	}
	if float64(moved) < onStopped {
		t.Errorf("%d clients reconnected; the %v on the stopped gateway should have", moved, onStopped)
	}

	var lines []string
	passedOn, drained := 0, 0
	for _, e := range ngx.Access() {
		lines = append(lines, fmt.Sprintf("%s %d %s (%s) %ss", e.URI, e.Status, e.Upstream, e.UpstreamStatus, e.Duration))
		if e.Status >= 500 {
			t.Errorf("nginx answered %s %d (upstream %s, %s): an EventSource would give up", e.URI, e.Status, e.Upstream, e.UpstreamStatus)
		}
		if strings.HasPrefix(e.Upstream, stopped.Addr+", ") {
			passedOn++
		}
		if drainPassedOn(stopped.Addr)(e) {
			drained++
		}
	}
	if drained == 0 {
		t.Errorf("no request for the draining gateway was passed on to the other one:\n  %s", strings.Join(lines, "\n  "))
	}
	t.Logf("%d clients, %d events each through nginx across the stop: %d lost, %d duplicated; %d reconnected (%v were on the stopped gateway), the first one connected %d times; %d requests passed on from the stopped gateway (%d of them 503 DRAINING); SIGTERM to exit %v; whole test %v",
		len(clients), len(history), lost, dup, moved, onStopped, s.Client.Connects(), passedOn, drained, exitAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	t.Logf("nginx's access log (uri, status, upstream, upstream status, time):\n  %s", strings.Join(lines, "\n  "))
}

// countLostDup counts the history's events the client never got and the
// events it got more than once.
func countLostDup(got []event.Message, history []redis.XMessage) (lost, dup int) {
	n := map[string]int{}
	for _, m := range got {
		n[m.ID]++
	}
	for _, h := range history {
		if n[h.ID] == 0 {
			lost++
		}
	}
	for _, k := range n {
		if k > 1 {
			dup += k - 1
		}
	}
	return lost, dup
}

// drainPassedOn matches an access log entry of a request that the gateway
// at addr refused with 503 and nginx passed on to another one.
func drainPassedOn(addr string) func(nginxtest.Entry) bool {
	return func(e nginxtest.Entry) bool {
		return strings.HasPrefix(e.Upstream, addr+", ") && strings.HasPrefix(e.UpstreamStatus, "503, ")
	}
}

// streamStatus opens url as a plain HTTP client (no Accept:
// text/event-stream) and returns the status, closing at once.
func streamStatus(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
