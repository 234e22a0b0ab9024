package gateway

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// An HTTP/1.x stream is taken over from net/http once its headers are
// decided: net/http would otherwise hold a goroutine, a read buffer and two
// write buffers (some 40 KiB) for each of thousands of mostly idle streams.
// A taken-over stream costs the frames waiting in its queue, a drain
// goroutine only while it writes, and a place in the close watcher (or a
// reader goroutine where there is none); the frames are written straight from the shared encoded bytes with
// one writev per batch. HTTP/2 streams stay with net/http.

// connSink writes a stream on a taken-over connection (used by one drain at
// a time, like the writer that owns it): each Flush is one
// HTTP/1.1 chunk (or raw bytes for HTTP/1.0), gathered with writev from the
// pieces written since the last flush, which it does not copy (the callers
// never modify them).
//
// A fan-out drain (see fanOut) flushes without waiting instead: with nb
// set, Flush writes what the socket takes now and holds the rest, and
// the drain hands a stream that holds bytes to a goroutine of its own,
// whose Flush waits until they are written. Where writes go through an
// nbWriter (Linux, TCP), every Flush does, waiting or not.
type connSink struct {
	conn    net.Conn
	raw     syscall.RawConn // nil where writes cannot be tried without waiting (TLS)
	chunked bool
	vec     net.Buffers // [chunk header] pieces... [CRLF]; slot 0 is the header
	size    int
	held    net.Buffers // whole chunks, or their ends, that a flush without waiting left unwritten
	nb      *nbWriter   // set while a fan-out drain runs the stream: Flush does not wait
	broken  bool        // a write failed: the byte stream is cut mid-chunk
	scratch [16]byte
	vecArr  [4][]byte // vec's first array
}

var crlf = []byte("\r\n")

func newConnSink(conn net.Conn, chunked bool) *connSink {
	s := new(connSink)
	s.init(conn, chunked)
	return s
}

// init sets up a zero connSink in place (see streamMem).
func (s *connSink) init(conn net.Conn, chunked bool) {
	s.conn, s.chunked = conn, chunked
	s.vec = s.vecArr[:1]
	if sc, ok := conn.(syscall.Conn); ok && writesNow {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
		}
	}
}

func (s *connSink) Write(b []byte) (int, error) {
	if len(b) > 0 {
		s.vec = append(s.vec, b)
		s.size += len(b)
	}
	return len(b), nil
}

// holding reports whether bytes a Flush left unwritten wait for a Flush
// that waits.
func (s *connSink) holding() bool { return len(s.held) > 0 }

func (s *connSink) Flush() error {
	if s.size == 0 && len(s.held) == 0 {
		return nil
	}
	out := s.vec[1:]
	if s.size == 0 {
		out = out[:0]
	} else if s.chunked {
		hdr := strconv.AppendInt(s.scratch[:0], int64(s.size), 16)
		s.vec[0] = append(hdr, '\r', '\n')
		s.vec = append(s.vec, crlf)
		out = s.vec
	}
	var err error
	switch {
	case s.nb != nil:
		err = s.flushNow(out, s.nb, false)
	case s.raw != nil:
		nb := nbWriters.Get().(*nbWriter)
		err = s.flushNow(out, nb, true)
		nbWriters.Put(nb)
	default:
		_, err = out.WriteTo(s.conn) // consumes out, not s.vec
	}
	clear(s.vec[:cap(s.vec)]) // let the frames go
	if cap(s.vec) > len(s.vecArr) {
		// A replay's flush holds hundreds of pieces: an array that size,
		// kept, would stay with the stream for its life (1.8 KiB for a
		// replay of 50 events), most of which it spends idle. vecArr
		// still holds the first pieces, copied from it as vec grew.
		clear(s.vecArr[:])
		s.vec = s.vecArr[:1]
	}
	s.vec, s.size = s.vec[:1], 0
	if err != nil {
		s.broken = true
	}
	return err
}

// flushNow writes the held bytes and then out, all of them with wait, else
// as far as the socket takes them now; it holds the rest, copying the chunk
// header out of scratch if it is part of it.
func (s *connSink) flushNow(out net.Buffers, nb *nbWriter, wait bool) error {
	pieces, hdr := out, 0
	if len(s.held) > 0 {
		hdr = len(s.held)
		pieces = append(s.held, out...)
	}
	n, err := nb.write(s.raw, pieces, wait)
	if err != nil {
		s.held = nil
		return err
	}
	skip := 0 // whole pieces written
	for skip < len(pieces) && n >= len(pieces[skip]) {
		n -= len(pieces[skip])
		skip++
	}
	if skip == len(pieces) {
		clear(s.held)
		s.held = s.held[:0]
		return nil
	}
	rest := pieces[skip:]
	rest[0] = rest[0][n:]
	if s.chunked && len(out) > 0 && skip <= hdr {
		i := hdr - skip
		rest[i] = append([]byte(nil), rest[i]...) // scratch is reused by the next chunk
	}
	held := append(s.held[:0], rest...)
	clear(held[len(held):cap(held)])
	s.held = held
	return nil
}

func (s *connSink) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

// end finishes the response (the last chunk) and closes the connection.
// After a failed write the stream is cut mid-chunk: it is only closed, so
// the client sees an incomplete response rather than bytes that would
// read as part of an event.
func (s *connSink) end() {
	if s.chunked && !s.broken && len(s.held) == 0 {
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = s.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = s.conn.Close()
}

// takeOver hijacks an HTTP/1.x response whose status and headers are set in
// h, writes the response head and returns the connection's sink (sink, set
// up, or a new one if sink is nil), or nil when the connection cannot be
// taken over (HTTP/2).
func takeOver(w http.ResponseWriter, r *http.Request, h http.Header, status int, sink *connSink) (*connSink, error) {
	if r.ProtoMajor != 1 {
		return nil, nil
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil // not supported here: stay with net/http
	}
	if sink == nil {
		sink = new(connSink)
	}
	sink.init(conn, r.ProtoMinor >= 1)
	head := make([]byte, 0, 512)
	head = fmt.Appendf(head, "HTTP/1.%d %d %s\r\n", r.ProtoMinor, status, http.StatusText(status))
	for k, vs := range h {
		for _, v := range vs {
			head = append(head, k...)
			head = append(head, ": "...)
			head = append(head, v...)
			head = append(head, "\r\n"...)
		}
	}
	if sink.chunked {
		head = append(head, "Transfer-Encoding: chunked\r\n"...)
	}
	// The connection is closed when the stream ends: say so, so that a
	// proxy's upstream keep-alive pool never takes it back.
	head = append(head, "Connection: close\r\n"...)
	head = append(head, "\r\n"...)
	// Anything net/http buffered for writing goes first; its read buffer
	// holds nothing we want (a pipelined request on a stream is an error).
	if err := rw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(head); err != nil {
		conn.Close()
		return nil, err
	}
	return sink, nil
}

// watchPeer arranges for onClose to run once the client closes (or resets,
// or writes to) a taken-over connection. With the Linux close watcher this
// costs no goroutine; otherwise (other systems, TLS connections, a watcher
// that failed) a reader goroutine does it (readPeer). stop ends the watch;
// call it before closing the connection.
func (s *Server) watchPeer(conn net.Conn, onClose func()) (stop func()) {
	if s.watcher != nil {
		if stop, err := s.watcher.watch(conn, onClose); err == nil {
			return stop
		}
	}
	s.readPeer(conn, onClose)
	return func() {}
}

// readPeer starts a reader goroutine, owned by the Server, that blocks in
// Read until the connection is closed at either end, then calls onClose.
func (s *Server) readPeer(conn net.Conn, onClose func()) {
	s.readers.Go(func() {
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				onClose()
				return
			}
		}
	})
}
