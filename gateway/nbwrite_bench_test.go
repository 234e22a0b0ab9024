//go:build linux

package gateway

import (
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// BenchmarkLoopbackWrite writes one event's chunk (253 bytes) to a loopback
// TCP socket that a goroutine drains: with writev of one piece, with write,
// and through the fan-out's nbWriter, which picks write for one piece.
func BenchmarkLoopbackWrite(b *testing.B) {
	chunk := []byte("fd\r\n" + strings.Repeat("x", 247) + "\r\n")[:253]
	run := func(b *testing.B, write func(raw syscall.RawConn) error) {
		server, client := tcpPair(b, false)
		go func() { _, _ = io.Copy(io.Discard, client) }()
		raw, err := server.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(chunk)))
		for b.Loop() {
			if err := write(raw); err != nil {
				b.Fatal(err)
			}
		}
	}
	syscallWrite := func(trap uintptr, a2, a3 uintptr) func(raw syscall.RawConn) error {
		return func(raw syscall.RawConn) error {
			var errno syscall.Errno
			err := raw.Write(func(fd uintptr) bool {
				_, _, errno = syscall.Syscall(trap, fd, a2, a3)
				return errno != syscall.EAGAIN
			})
			if err == nil && errno != 0 {
				err = errno
			}
			return err
		}
	}
	b.Run("writev", func(b *testing.B) {
		iov := []syscall.Iovec{{Base: &chunk[0]}}
		iov[0].SetLen(len(chunk))
		run(b, syscallWrite(syscall.SYS_WRITEV, uintptr(unsafe.Pointer(&iov[0])), 1))
	})
	b.Run("write", func(b *testing.B) {
		run(b, syscallWrite(syscall.SYS_WRITE, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk))))
	})
	b.Run("nbWriter", func(b *testing.B) {
		nb := newNBWriter()
		bufs := net.Buffers{chunk[:4], chunk[4:251], chunk[251:]} // header, frame, CRLF
		run(b, func(raw syscall.RawConn) error {
			_, err := nb.write(raw, bufs, true)
			return err
		})
	})
}
