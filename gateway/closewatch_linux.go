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
type closeWatcher struct {
	epfd   int
	wakeFD int // an eventfd in the set, written to stop the watcher

	mu     sync.Mutex // guards subs, next, closed
	subs   map[uint64]func()
	next   uint64
	closed bool

	done chan struct{}
}

func newCloseWatcher() (*closeWatcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakeFD, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	w := &closeWatcher{epfd: epfd, wakeFD: int(wakeFD), subs: map[uint64]func(){}, next: 1, done: make(chan struct{})}
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
// closes it, resets it or sends data. stop ends the watch; call it before
// closing conn. onClose must not block.
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
	if w.closed {
		w.mu.Unlock()
		return nil, net.ErrClosed
	}
	token := w.next
	w.next++
	w.subs[token] = onClose
	w.mu.Unlock()

	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setToken(&ev, token)
	var ctlErr error
	if err := rc.Control(func(fd uintptr) {
		ctlErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || ctlErr != nil {
		w.forget(token)
		return nil, errors.Join(err, ctlErr)
	}
	return func() {
		if w.forget(token) {
			// Still registered: take it out of the set while the
			// descriptor is certainly this connection's.
			_ = rc.Control(func(fd uintptr) {
				_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
			})
		}
	}, nil
}

// forget removes a token and reports whether it was still there.
func (w *closeWatcher) forget(token uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.subs[token]
	delete(w.subs, token)
	return ok
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
			return
		}
		for _, ev := range events[:n] {
			token := getToken(&ev)
			if token == 0 {
				return // Close
			}
			w.mu.Lock()
			onClose := w.subs[token]
			delete(w.subs, token)
			w.mu.Unlock()
			if onClose != nil {
				onClose()
			}
		}
	}
}

// close stops the watcher and waits for its goroutine. Watches still
// registered never fire.
func (w *closeWatcher) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	one := [8]byte{1}
	_, _ = syscall.Write(w.wakeFD, one[:])
	<-w.done
	syscall.Close(w.epfd)
	syscall.Close(w.wakeFD)
}

// The token rides in the event's 64-bit data field (Fd and Pad in Go's
// struct).
func setToken(ev *syscall.EpollEvent, token uint64) {
	ev.Fd, ev.Pad = int32(uint32(token)), int32(uint32(token>>32))
}

func getToken(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
