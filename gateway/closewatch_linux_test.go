//go:build linux

package gateway

import (
	"net"
	"sync/atomic"
	"syscall"
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

// unexpectedFailure is the failed callback of a watcher that must not fail.
func unexpectedFailure(t *testing.T) func(error, []orphan) {
	return func(err error, orphans []orphan) {
		t.Errorf("watcher failed: %v (%d orphans)", err, len(orphans))
	}
}

func TestCloseWatcher(t *testing.T) {
	t.Parallel()
	w, err := newCloseWatcher(unexpectedFailure(t))
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
	w, err := newCloseWatcher(unexpectedFailure(t))
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

// TestCloseWatcherFailure makes epoll_wait fail under a running watcher: the
// watcher must hand back what it still watches, refuse new watches and still
// close, instead of going quiet with every stream unwatched.
func TestCloseWatcherFailure(t *testing.T) {
	t.Parallel()
	type failure struct {
		err     error
		orphans []orphan
	}
	failures := make(chan failure, 2) // room for a second call, to see it
	w, err := newCloseWatcher(func(err error, orphans []orphan) {
		failures <- failure{err, orphans}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close) // if the test stops early
	null, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(null)

	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not called", what)
		}
	}
	type watched struct {
		conn, peer net.Conn
		stop       func()
		calls      atomic.Int32
		closed     chan struct{}
	}
	watch := func(onClose func()) *watched {
		t.Helper()
		c := &watched{closed: make(chan struct{})}
		c.conn, c.peer = pair(t)
		stop, err := w.watch(c.conn, func() {
			if c.calls.Add(1) == 1 {
				close(c.closed)
			}
			if onClose != nil {
				onClose()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		c.stop = stop
		return c
	}

	// Two quiet connections, which become the orphans, and one of each
	// kind that must not: stopped, fired, and the trigger.
	kept := []*watched{watch(nil), watch(nil)}
	stopped := watch(nil)
	stopped.stop()
	fired := watch(nil)
	fired.peer.Close()
	wait(fired.closed, "fired: onClose")
	// The trigger's onClose, on the watcher's goroutine, puts /dev/null
	// under the epoll descriptor's number, so the watcher's very next
	// epoll_wait fails (EINVAL: not an epoll descriptor) with nothing able
	// to fire in between. dup3 swaps the file in one step: the number is
	// never free for another test's descriptor to take, and the watcher
	// cannot end up waiting on someone else's set.
	trigger := watch(func() {
		if err := syscall.Dup3(null, w.epfd, syscall.O_CLOEXEC); err != nil {
			t.Errorf("dup3: %v", err)
		}
	})
	trigger.peer.Close()

	var f failure
	select {
	case f = <-failures:
	case <-time.After(10 * time.Second):
		t.Fatal("failed not called: the watcher exited silently, or never failed")
	}
	if f.err == nil {
		t.Error("failed called with a nil error")
	}
	t.Logf("failed(%v, %d orphans)", f.err, len(f.orphans))
	// Exactly the kept connections, each with its own onClose.
	byConn := map[net.Conn]*watched{}
	for _, c := range kept {
		byConn[c.conn] = c
	}
	for _, o := range f.orphans {
		c, ok := byConn[o.conn]
		if !ok {
			t.Errorf("orphan %v: not a connection still watched", o.conn.LocalAddr())
			continue
		}
		delete(byConn, o.conn)
		o.onClose() // what the owner's reader does once the peer closes
		if n := c.calls.Load(); n != 1 {
			t.Errorf("orphan %v: its onClose reached %d calls, want 1", o.conn.LocalAddr(), n)
		}
	}
	for _, c := range byConn {
		t.Errorf("%v: still watched but not handed over", c.conn.LocalAddr())
	}

	// A failed watcher refuses watches, and stop of an orphan does
	// nothing. The watcher calls no onClose any more: an orphan's peer
	// closing is for its owner to notice.
	srv, _ := pair(t)
	if _, err := w.watch(srv, func() {}); err == nil {
		t.Error("watch after the failure succeeded")
	}
	for _, c := range kept {
		c.stop()
		c.peer.Close()
	}
	stopped.peer.Close()
	time.Sleep(50 * time.Millisecond)
	for _, c := range []*watched{kept[0], kept[1], fired, trigger} {
		if n := c.calls.Load(); n != 1 {
			t.Errorf("%v: onClose called %d times, want 1", c.conn.LocalAddr(), n)
		}
	}
	if n := stopped.calls.Load(); n != 0 {
		t.Errorf("stopped watch: onClose called %d times", n)
	}

	// close still returns, once, and failed is never called again.
	closed := make(chan struct{})
	go func() {
		w.close()
		w.close()
		close(closed)
	}()
	wait(closed, "close after the failure")
	if len(failures) != 0 {
		t.Error("failed called more than once")
	}
}
