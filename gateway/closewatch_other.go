//go:build !linux

package gateway

import (
	"errors"
	"net"
)

// closeWatcher is Linux-only; elsewhere each taken-over stream watches its
// connection with a reader goroutine (see Server.watchPeer).
type closeWatcher struct{}

// orphan is what a failed Linux watcher hands back; see closewatch_linux.go.
type orphan struct {
	conn    net.Conn
	onClose func()
}

func newCloseWatcher(func(err error, orphans []orphan)) (*closeWatcher, error) {
	return nil, errors.ErrUnsupported
}

func (*closeWatcher) watch(net.Conn, func()) (func(), error) { return nil, errors.ErrUnsupported }

func (*closeWatcher) close() {}
