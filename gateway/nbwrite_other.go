//go:build !linux

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// writesNow says that connSinks write through an nbWriter: not here, so
// they write with net.Buffers and every stream's drain runs on a goroutine
// of its own.
const writesNow = false

type nbWriter struct{}

func newNBWriter() *nbWriter { return &nbWriter{} }

func (nb *nbWriter) write(syscall.RawConn, net.Buffers, bool) (int, error) {
	return 0, errors.New("gateway: nbWriter is not supported here")
}
