//go:build linux

package gateway

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestCloseWatcher(t *testing.T) {
	t.Parallel()
	w, err := newCloseWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()

	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: onClose not called", what)
		}
	}
	watch := func(conn net.Conn) (<-chan struct{}, func(), *atomic.Int32) {
		t.Helper()
		ch := make(chan struct{})
		var calls atomic.Int32
		stop, err := w.watch(conn, func() {
			if calls.Add(1) == 1 {
				close(ch)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return ch, stop, &calls
	}

	// The client closes, resets, or writes: each is noticed.
	srv, cli := pair(t)
	closed, stop, calls := watch(srv)
	cli.Close()
	wait(closed, "FIN")
	stop()

	srv, cli = pair(t)
	closed, _, _ = watch(srv)
	cli.(*net.TCPConn).SetLinger(0)
	cli.Close()
	wait(closed, "RST")

	srv, cli = pair(t)
	closed, _, _ = watch(srv)
	cli.Write([]byte("x"))
	wait(closed, "data")

	// A quiet connection is not reported, and a stopped watch never fires,
	// even when the client closes afterwards.
	srv, cli = pair(t)
	quiet, stopQuiet, quietCalls := watch(srv)
	time.Sleep(50 * time.Millisecond)
	select {
	case <-quiet:
		t.Fatal("onClose for a connection that is still open")
	default:
	}
	stopQuiet()
	cli.Close()
	time.Sleep(50 * time.Millisecond)
	if n := quietCalls.Load(); n != 0 {
		t.Errorf("onClose called %d times after stop", n)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("onClose called %d times for one close", n)
	}
	// Many at once, each reported to its own callback.
	const n = 50
	var got atomic.Int32
	done := make(chan struct{})
	var clients []net.Conn
	for range n {
		srv, cli := pair(t)
		if _, err := w.watch(srv, func() {
			if got.Add(1) == n {
				close(done)
			}
		}); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cli)
	}
	for _, c := range clients {
		c.Close()
	}
	wait(done, "50 closes")
}

func TestCloseWatcherClose(t *testing.T) {
	t.Parallel()
	w, err := newCloseWatcher()
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := pair(t)
	if _, err := w.watch(srv, func() {}); err != nil {
		t.Fatal(err)
	}
	w.close() // returns with a watch still registered
	w.close() // idempotent
	if _, err := w.watch(srv, func() {}); err == nil {
		t.Error("watch after close succeeded")
	}
	if _, err := w.watch(struct{ net.Conn }{srv}, func() {}); err == nil {
		t.Error("watch of a connection without a descriptor succeeded")
	}
}
