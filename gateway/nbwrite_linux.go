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
//
// Small writes (an event or a few, the usual fan-out) are copied into buf
// and written as one piece: the kernel's TCP send path costs about a fifth
// more for a chunk header, a frame and a CRLF as three pieces than for
// the same bytes as one, and the copy is a small fraction of that.
type nbWriter struct {
	iov   [64]syscall.Iovec
	cnt   int
	n     int
	errno syscall.Errno
	call  func(fd uintptr) bool // nb.writev, made once
	buf   [nbCopyMax]byte
}

// nbCopyMax is the most bytes nbWriter copies to write them as one piece.
const nbCopyMax = 4096

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
	if len(bufs) > 1 {
		if n := nb.gather(bufs); n > 0 {
			nb.iov[0].Base = &nb.buf[0]
			nb.iov[0].SetLen(n)
			nb.cnt = 1
			return nb.once(raw)
		}
	}
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
		n, err := nb.once(raw)
		total += n
		if err != nil || n < want {
			return total, err // failed, or the socket is full
		}
		bufs = bufs[i:]
	}
	return total, nil
}

// once makes one writev of nb.iov[:nb.cnt]; a full socket is 0 bytes
// written and no error.
func (nb *nbWriter) once(raw syscall.RawConn) (int, error) {
	err := raw.Write(nb.call)
	clear(nb.iov[:nb.cnt]) // let the frames go
	switch {
	case err != nil:
		return 0, err
	case nb.errno == syscall.EAGAIN:
		return 0, nil
	case nb.errno != 0:
		return 0, &net.OpError{Op: "writev", Net: "tcp", Err: os.NewSyscallError("writev", nb.errno)}
	}
	return nb.n, nil
}

// gather copies bufs into nb.buf and returns their length, or 0 when they
// do not fit.
func (nb *nbWriter) gather(bufs net.Buffers) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
		if n > len(nb.buf) {
			return 0
		}
	}
	at := 0
	for _, b := range bufs {
		at += copy(nb.buf[at:], b)
	}
	return at
}
