package gateway

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

// servedGateway is a Server serving on a loopback port, with a job
// registered, for tests of its lifecycle.
type servedGateway struct {
	s      *Server
	addr   string
	cancel func()
	served chan error
}

func serveForTest(t *testing.T, hook func(*Server)) *servedGateway {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	if _, err := publisher.New(rdb).Job("adm").Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Retry: 50 * time.Millisecond, CanaryInterval: 100 * time.Millisecond,
		ShutdownGrace: 200 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	hook(s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &servedGateway{s: s, addr: l.Addr().String(), cancel: cancel, served: make(chan error, 1)}
	go func() { g.served <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-g.served:
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for s.hub.healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatal("gateway not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

// openRaw sends a stream request on a new connection and returns it with
// its response head read.
func (g *servedGateway) openRaw(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, "GET /api/reports/adm/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn, bufio.NewReader(conn)
}

// TestPanicAfterTakeOverEndsTheStream: a stream whose handler panics after
// its connection was taken over is ended all the same: the connection is
// closed, and nothing it held (its slot, its place in the shutdown
// registry, its count in ssegate_connections) stays behind.
func TestPanicAfterTakeOverEndsTheStream(t *testing.T) {
	t.Parallel()
	g := serveForTest(t, func(s *Server) { s.hookTakenOver = func() { panic("test: after take-over") } })
	_, r := g.openRaw(t)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("reading the stream: %v (want it closed by the server)", err)
	}
	// The connection is closed first; the rest is released right after.
	released := func() bool {
		return g.s.active.Load() == 0 && testutil.ToFloat64(g.s.metrics.connections) == 0 &&
			testutil.ToFloat64(g.s.metrics.panics) == 1
	}
	for deadline := time.Now().Add(10 * time.Second); !released() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !released() {
		t.Errorf("after the panic: %d streams admitted, ssegate_connections = %v, ssegate_panics_total = %v; want 0, 0, 1",
			g.s.active.Load(), testutil.ToFloat64(g.s.metrics.connections), testutil.ToFloat64(g.s.metrics.panics))
	}
	g.cancel()
	select {
	case err := <-g.served:
		if err != nil {
			t.Error(err)
		}
		g.served <- err
	case <-time.After(3 * time.Second):
		t.Error("Serve did not return after the panicked stream")
	}
}

// TestShutdownWaitsForAdmittedStream: a stream admitted before the
// shutdown but taken over only during it is counted from its admission:
// Serve returns after it has ended, not before it began.
func TestShutdownWaitsForAdmittedStream(t *testing.T) {
	t.Parallel()
	inHook, release := make(chan struct{}), make(chan struct{})
	g := serveForTest(t, func(s *Server) {
		s.hookTakenOver = func() {
			close(inHook)
			<-release
		}
	})
	_, r := g.openRaw(t)
	<-inHook
	g.cancel()
	select {
	case err := <-g.served:
		g.served <- err
		t.Fatalf("Serve returned (%v) while an admitted stream had not even begun", err)
	case <-time.After(500 * time.Millisecond): // the drain's grace is 200ms
	}
	close(release)
	select {
	case err := <-g.served:
		g.served <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the stream ended")
	}
	if n := g.s.active.Load(); n != 0 {
		t.Errorf("Serve returned with %d streams admitted", n)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "retry:") {
		t.Errorf("the stream ended without a retry hint: %q", body)
	}
}
