//go:build linux

package gateway

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// closeWatcher notices, for many connections at once, when a client closes
// its connection (or sends anything, which an event stream client never
// does): one goroutine in epoll_wait instead of one goroutine blocked in
// Read per connection. Each connection is registered one-shot with a token
// of its own, so an event can never reach the stream of a later connection
// that reuses the file descriptor.
//
// If epoll_wait fails, which it cannot recover from, the watcher closes
// itself and hands every connection it still watches back to its owner (see
// newCloseWatcher), instead of leaving them unwatched.
//
// watch, the stop functions it returns and close may be called from any
// goroutine; onClose and failed run on the watcher's goroutine, one at a
// time.
type closeWatcher struct {
	epfd   int
	wakeFD int // an eventfd in the set, written to stop the watcher
	failed func(err error, orphans []orphan)

	// mu guards subs, next and closed, and is held across every epoll_ctl:
	// once closed is set none can start, so close may release epfd without
	// one reaching a later file that reuses the number.
	mu     sync.Mutex
	subs   map[uint64]orphan // the watches still registered: orphans if the watcher fails
	next   uint64
	closed bool // by close or by a failure: watch refuses

	done      chan struct{} // run has returned (and with it every callback)
	closeOnce sync.Once
}

// An orphan is a watch the watcher could no longer keep when it failed: its
// owner now has to notice the close of conn itself and call onClose.
type orphan struct {
	conn    net.Conn
	onClose func()
}

// newCloseWatcher starts a watcher. If epoll_wait fails, the watcher stops,
// refuses later watches, and calls failed once, from its goroutine, with the
// error and every watch still registered (none that fired or was stopped),
// so the caller can log it and watch those connections another way. failed
// is not called if close came first. It must not be nil, block, or call
// close (close waits for it).
func newCloseWatcher(failed func(err error, orphans []orphan)) (*closeWatcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakeFD, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	w := &closeWatcher{
		epfd: epfd, wakeFD: int(wakeFD), failed: failed,
		subs: map[uint64]orphan{}, next: 1, done: make(chan struct{}),
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // token 0: the wake-up
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wakeFD, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(w.wakeFD)
		return nil, err
	}
	go w.run()
	return w, nil
}

var errNotWatchable = errors.New("gateway: connection has no file descriptor to watch")

// watch calls onClose once, from the watcher's goroutine, when conn's peer
// closes it, resets it or sends data. It fails once the watcher is closed or
// has failed; the caller then watches conn another way. stop ends the watch;
// call it before closing conn. If the watch has fired, or was handed to
// failed as an orphan, stop does nothing: the orphan's onClose is then the
// owner's to call (a reader goroutine of its own, say, which ends when the
// owner closes conn). onClose must not block.
func (w *closeWatcher) watch(conn net.Conn, onClose func()) (stop func(), err error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errNotWatchable
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, net.ErrClosed
	}
	token := w.next
	w.next++
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setToken(&ev, token)
	var ctlErr error
	if err := rc.Control(func(fd uintptr) {
		ctlErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || ctlErr != nil {
		return nil, errors.Join(err, ctlErr)
	}
	// An event for token waits in run for mu, so registering it after the
	// ADD cannot lose it.
	w.subs[token] = orphan{conn, onClose}
	return func() { w.stop(token, rc) }, nil
}

// stop ends the watch of token, if it is still registered: under mu, so it
// is either done before a failure hands the watch over, or not at all.
func (w *closeWatcher) stop(token uint64, rc syscall.RawConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.subs[token]; !ok {
		return // fired, or handed to failed
	}
	delete(w.subs, token)
	if w.closed {
		return // close is releasing the whole set
	}
	// Take it out of the set while the descriptor is certainly this
	// connection's.
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}

func (w *closeWatcher) run() {
	defer close(w.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			w.fail(err)
			return
		}
		for _, ev := range events[:n] {
			token := getToken(&ev)
			if token == 0 {
				return // close
			}
			w.mu.Lock()
			sub, ok := w.subs[token]
			delete(w.subs, token)
			w.mu.Unlock()
			if ok {
				sub.onClose()
			}
		}
	}
}

// fail closes the watcher after epoll_wait failed and hands what it still
// watches to failed. The watches leave subs under the same lock as watch and
// stop take, so each is handed over, or registered too late (watch fails),
// or stopped first, never two of these.
func (w *closeWatcher) fail(err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return // close came first: it wants no callbacks
	}
	w.closed = true
	orphans := make([]orphan, 0, len(w.subs))
	for _, o := range w.subs {
		orphans = append(orphans, o)
	}
	clear(w.subs)
	w.mu.Unlock()
	w.failed(err, orphans)
}

// close stops the watcher and waits for its goroutine, and with it for any
// onClose or failed call in progress. Watches still registered never fire.
// After a failure it only releases the descriptors.
func (w *closeWatcher) close() {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		one := [8]byte{1}
		_, _ = syscall.Write(w.wakeFD, one[:]) // nobody reads it if run has failed
		<-w.done
		syscall.Close(w.epfd)
		syscall.Close(w.wakeFD)
	})
}

// The token rides in the event's 64-bit data field (Fd and Pad in Go's
// struct).
func setToken(ev *syscall.EpollEvent, token uint64) {
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
}

func getToken(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
