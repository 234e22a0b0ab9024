package gateway

import (
	"net"
	"os"
	"syscall"
	"unsafe"
)

// writesNow says that connSinks write through an nbWriter.
const writesNow = true

// nbWriter writes a connection's pieces with writev (write for one piece),
// either without waiting for room in the socket (what a fan-out drain does)
// or waiting until all is written (every other flush). One serves many streams in
// turn (fan-out drains and a sync.Pool share them), so no stream keeps an
// iovec array of its own, as net.Buffers' writes would.
//
// Small writes (an event or a few, the usual case) are copied into buf
// and written as one piece: the kernel's TCP send path costs about a fifth
// more for a chunk header, a frame and a CRLF as three pieces than for
// the same bytes as one, and the copy is a small fraction of that.
//
// The attempt and the wait happen inside one RawConn.Write, which readies
// the poller before calling attempt: room made after a failed attempt is
// never missed.
type nbWriter struct {
	iov  [64]syscall.Iovec
	buf  [nbCopyMax]byte
	one  [1][]byte
	call func(fd uintptr) bool // nb.attempt, made once

	// One write's state.
	bufs  net.Buffers // what to write
	i     int         // bufs[:i] are written...
	off   int         // ...and bufs[i][:off]
	n     int         // bytes written
	errno syscall.Errno
	sys   string // the call that failed with errno: "write" or "writev"
	wait  bool   // wait for room until all is written
}

// nbCopyMax is the most bytes nbWriter copies to write them as one piece.
const nbCopyMax = 4096

func newNBWriter() *nbWriter {
	nb := &nbWriter{}
	nb.call = nb.attempt
	return nb
}

// write writes bufs and returns how many bytes it wrote: all of them, or
// with wait false as many as the socket takes now (a full socket is not
// an error).
func (nb *nbWriter) write(raw syscall.RawConn, bufs net.Buffers, wait bool) (int, error) {
	nb.bufs, nb.i, nb.off, nb.n, nb.errno, nb.wait = bufs, 0, 0, 0, 0, wait
	if len(bufs) > 1 {
		if n := nb.gather(bufs); n > 0 {
			nb.one[0] = nb.buf[:n]
			nb.bufs = nb.one[:]
		}
	}
	err := raw.Write(nb.call)
	n := nb.n
	nb.bufs, nb.one[0] = nil, nil // let the frames go
	switch {
	case err != nil:
		return n, err
	case nb.errno != 0:
		return n, &net.OpError{Op: nb.sys, Net: "tcp", Err: os.NewSyscallError(nb.sys, nb.errno)}
	}
	return n, nil
}

// attempt writes as much of what is left as the socket takes. It reports
// whether the write is over: all written, failed, or, not waiting, the
// socket full.
func (nb *nbWriter) attempt(fd uintptr) bool {
	for nb.i < len(nb.bufs) {
		cnt, want := 0, 0
		for j, off := nb.i, nb.off; j < len(nb.bufs) && cnt < len(nb.iov); j, off = j+1, 0 {
			if b := nb.bufs[j][off:]; len(b) > 0 {
				nb.iov[cnt].Base = &b[0]
				nb.iov[cnt].SetLen(len(b))
				cnt++
				want += len(b)
			}
		}
		if cnt == 0 {
			break
		}
		var r uintptr
		var e syscall.Errno
		if cnt == 1 {
			// One piece (the usual case, see gather): write costs about
			// 0.92× writev here (BenchmarkLoopbackWrite).
			r, _, e = syscall.Syscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(nb.iov[0].Base)), uintptr(nb.iov[0].Len))
		} else {
			r, _, e = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&nb.iov[0])), uintptr(cnt))
		}
		clear(nb.iov[:cnt])
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return !nb.wait
		default:
			nb.errno, nb.sys = e, "writev"
			if cnt == 1 {
				nb.sys = "write"
			}
			return true
		}
		nb.n += int(r)
		nb.advance(int(r))
	}
	return true
}

// advance moves past n more written bytes.
func (nb *nbWriter) advance(n int) {
	for n > 0 && nb.i < len(nb.bufs) {
		left := len(nb.bufs[nb.i]) - nb.off
		if n < left {
			nb.off += n
			return
		}
		n -= left
		nb.i, nb.off = nb.i+1, 0
	}
	for nb.i < len(nb.bufs) && len(nb.bufs[nb.i]) == nb.off {
		nb.i, nb.off = nb.i+1, 0 // empty pieces
	}
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
