package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
	"github.com/ssegate/ssegate/test/streamtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait is the bound of every wait in these tests: far above what any step
// needs, so a slow shared machine never fails a test, while a hang still does.
const wait = 15 * time.Second

var keys = protocol.NewKeys("")

// env is one test's Redis and publisher.
type env struct {
	t     *testing.T
	redis *redistest.Server
	rdb   *redis.Client
	pub   *publisher.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	return &env{t: t, redis: srv, rdb: rdb, pub: publisher.New(rdb)}
}

// testConfig has short intervals so tests run fast; each test changes what
// it exercises.
func testConfig() gateway.Config {
	return gateway.Config{
		Retry:          50 * time.Millisecond,
		CanaryInterval: 100 * time.Millisecond,
		JoinTimeout:    3 * time.Second,
		ShutdownGrace:  200 * time.Millisecond,
	}
}

// gw is one gateway served in-process on a free loopback port.
type gw struct {
	URL  string
	srv  *gateway.Server
	reg  *prometheus.Registry
	stop func() // cancels Serve and waits for it; idempotent
	logs *syncBuffer
}

// gateway starts a gateway on e's Redis (or on rdb when given).
func (e *env) gateway(cfg gateway.Config, rdb ...redis.UniversalClient) *gw {
	e.t.Helper()
	var client redis.UniversalClient = e.rdb
	if len(rdb) > 0 {
		client = rdb[0]
	}
	return startGateway(e.t, cfg, client)
}

func startGateway(t *testing.T, cfg gateway.Config, rdb redis.UniversalClient) *gw {
	t.Helper()
	return serveGateway(t, cfg, rdb, true)
}

// startGatewayWith is startGateway with a hook that sees the Server before
// it serves (to add routes).
func startGatewayWith(t *testing.T, cfg gateway.Config, rdb redis.UniversalClient, hook func(*gateway.Server)) *gw {
	t.Helper()
	return serveGateway(t, cfg, rdb, true, hook)
}

func serveGateway(t *testing.T, cfg gateway.Config, rdb redis.UniversalClient, waitReady bool, hooks ...func(*gateway.Server)) *gw {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := gateway.New(cfg, rdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		h(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	g := &gw{URL: "http://" + l.Addr().String(), srv: srv, reg: srv.Registry(), logs: logs}
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("Serve did not return")
			}
		})
	}
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway %s logs:\n%s", g.URL, logs.String())
		}
	})
	if waitReady {
		g.waitReady(t)
	}
	return g
}

func (g *gw) waitReady(t *testing.T) {
	t.Helper()
	streamtest.Eventually(t, "gateway ready", func() bool {
		resp, err := http.Get(g.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (g *gw) streamURL(job string, query ...string) string {
	u := g.URL + "/api/reports/" + job + "/stream"
	if len(query) > 0 {
		u += "?" + strings.Join(query, "&")
	}
	return u
}

// gauge reads a metric without labels (or with the given label pair).
func (g *gw) metric(t testing.TB, name string, label ...string) float64 {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(label) == 2 {
				match := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[0] && lp.GetValue() == label[1] {
						match = true
					}
				}
				if !match {
					continue
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Counter != nil:
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

var _ = testutil.ToFloat64 // the testutil package is the reference for reading metrics

// history returns the job's stream entries.
func (e *env) history(job string) []redis.XMessage {
	e.t.Helper()
	entries, err := e.rdb.XRange(context.Background(), keys.Events(job), "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return entries
}

// must fails the test on a publish error and returns the event ID.
func must(t testing.TB) func(string, error) string {
	return func(id string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
}

// rawGet sends a GET with headers and returns the status, headers and the
// whole body (read to EOF: the server must close the stream by itself).
func rawGet(t *testing.T, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// decode parses an SSE body into messages, heartbeats included.
func decode(t *testing.T, body string) []event.Message {
	t.Helper()
	d := event.NewDecoder(strings.NewReader(body))
	var out []event.Message
	for {
		m, err := d.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
