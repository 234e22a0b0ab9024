//go:build !linux

package gateway

import (
	"errors"
	"net"
)

// closeWatcher is Linux-only; elsewhere each taken-over stream watches its
// connection with a reader goroutine (see Server.watchPeer).
type closeWatcher struct{}

func newCloseWatcher() (*closeWatcher, error) { return nil, errors.ErrUnsupported }

func (*closeWatcher) watch(net.Conn, func()) (func(), error) { return nil, errors.ErrUnsupported }

func (*closeWatcher) close() {}
