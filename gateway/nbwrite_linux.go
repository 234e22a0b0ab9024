package gateway

import (
	"net"
	"os"
	"syscall"
	"unsafe"
)

// writesNow says that connSinks can write without waiting (nbWriter).
const writesNow = true

// nbWriter writes a connection's pieces with writev without waiting for
// room in the socket: one serves every stream of a fan-out drain in turn,
// so its iovec array is not kept per stream.
type nbWriter struct {
	iov   [64]syscall.Iovec
	cnt   int
	n     int
	errno syscall.Errno
	call  func(fd uintptr) bool // nb.writev, made once
}

func newNBWriter() *nbWriter {
	nb := &nbWriter{}
	nb.call = nb.writev
	return nb
}

func (nb *nbWriter) writev(fd uintptr) bool {
	for {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&nb.iov[0])), uintptr(nb.cnt))
		if e == syscall.EINTR {
			continue
		}
		nb.n, nb.errno = int(r), e
		return true // never wait: a full socket is the caller's to handle
	}
}

// write writes bufs as far as the socket takes them now and returns how
// many bytes it wrote; a full socket is not an error.
func (nb *nbWriter) write(raw syscall.RawConn, bufs net.Buffers) (int, error) {
	total := 0
	for len(bufs) > 0 {
		nb.cnt = 0
		want, i := 0, 0
		for ; i < len(bufs) && nb.cnt < len(nb.iov); i++ {
			if b := bufs[i]; len(b) > 0 {
				nb.iov[nb.cnt].Base = &b[0]
				nb.iov[nb.cnt].SetLen(len(b))
				nb.cnt++
				want += len(b)
			}
		}
		if nb.cnt == 0 {
			break
		}
		err := raw.Write(nb.call)
		clear(nb.iov[:nb.cnt]) // let the frames go
		if err != nil {
			return total, err
		}
		if nb.errno == syscall.EAGAIN {
			return total, nil
		}
		if nb.errno != 0 {
			return total, &net.OpError{Op: "writev", Net: "tcp", Err: os.NewSyscallError("writev", nb.errno)}
		}
		total += nb.n
		if nb.n < want {
			return total, nil // the socket is full
		}
		bufs = bufs[i:]
	}
	return total, nil
}
