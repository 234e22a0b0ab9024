//go:build !linux

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// writesNow says that connSinks can write without waiting: not here, so
// every stream's drain runs on a goroutine of its own.
const writesNow = false

type nbWriter struct{}

func newNBWriter() *nbWriter { return &nbWriter{} }

func (nb *nbWriter) write(syscall.RawConn, net.Buffers) (int, error) {
	return 0, errors.New("gateway: writes without waiting are not supported here")
}
