package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"math"
	"net"
	"net/http"
	"sync/atomic"
)

// Request smuggling. A proxy in front and the gateway behind it must agree
// on where each request on a connection ends; a request with both
// Content-Length and Transfer-Encoding is framed by one of them by the
// proxy and, maybe, by the other here, and what one side takes for a body
// the other takes for the next request (RFC 9112, section 11.2). net/http
// goes by Transfer-Encoding and deletes both fields from the request it
// hands over, so no handler can tell. So every accepted TCP connection is
// read through a scanner that follows net/http's framing of HTTP/1 requests
// and looks at each request's header block for the two fields:
//
//   - both in one request: that request is refused (400
//     AMBIGUOUS_LENGTH, Connection: close), and so is any later one on the
//     connection, and the connection is closed;
//   - Transfer-Encoding alone (chunked, or on HTTP/1.0, where net/http
//     ignores it and reads no body): the request is served, but the
//     scanner does not follow chunked bodies, so it stops there, and the
//     answer to that request (and to any later one) says Connection: close;
//   - anything else it cannot follow exactly (a folded header line, a
//     Content-Length that is not one number): the same;
//   - a connection that starts with the HTTP/2 preface is left alone: HTTP/2
//     frames every message itself.
//
// With TLS (Config.TLSCertFile), the scanner reads the decrypted bytes of
// each connection that chose HTTP/1 by ALPN (see tlsListener); one that
// chose h2 is not scanned. Requests served through Handler alone (httptest,
// a server of the embedder's own) and connections that are neither TCP nor
// the gateway's own TLS (a Unix socket's, an embedder's TLS listener's) are
// not scanned: the check then does nothing.

// CodeAmbiguousLength is the code of the 400 answered to a request with
// both Content-Length and Transfer-Encoding.
const CodeAmbiguousLength = "AMBIGUOUS_LENGTH"

// Why a scanner stopped (framing.verdict).
const (
	framingFollowed  = iota // still scanning: every request so far was framed by Content-Length alone
	framingAmbiguous        // a request had both fields: refuse, close
	framingUnchecked        // stopped before a request it could not follow: close after answering
	framingHTTP2            // the HTTP/2 preface: nothing to do
)

// scanListener wraps the TCP connections it accepts in scannedConns.
type scanListener struct{ net.Listener }

func (l scanListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &scannedConn{TCPConn: tc}, nil
	}
	return c, err
}

// framing is what a connection's scan found: only the connection's Read
// uses the scanner (net/http reads one at a time); the verdict is set once,
// when the scanner stops, and read by handlers.
type framing struct {
	scan    lengthScanner
	verdict atomic.Uint32
}

// saw scans bytes just read from the connection.
func (f *framing) saw(p []byte) {
	if len(p) > 0 && f.scan.state != scanStopped {
		if v := f.scan.scan(p); v != framingFollowed {
			f.verdict.Store(uint32(v))
		}
	}
}

// scannedConn is a TCP connection whose reads go through a lengthScanner.
// It embeds *net.TCPConn, so every method but Read (and WriteTo, which would
// read past it) is the TCP connection's own: writev for net.Buffers,
// SyscallConn for the close watcher, CloseWrite for net/http.
type scannedConn struct {
	*net.TCPConn
	framing
}

func (c *scannedConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.saw(p[:n])
	return n, err
}

// WriteTo hides TCPConn.WriteTo, which io.Copy would use to read the
// connection without Read.
func (c *scannedConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// scannedTLSConn is a TLS connection that chose HTTP/1 (see tlsListener)
// whose decrypted reads go through a lengthScanner. It embeds *tls.Conn:
// net/http sets Request.TLS from its ConnectionState, and CloseWrite sends
// close_notify. It has no SyscallConn: the close watcher cannot see through
// TLS, so a stream taken over on it is watched by a reader goroutine.
type scannedTLSConn struct {
	*tls.Conn
	framing
}

func (c *scannedTLSConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.saw(p[:n])
	return n, err
}

type framingKey struct{}

// connContext is the http.Server's ConnContext: it puts a scanned
// connection's framing in the context of its requests.
func connContext(ctx context.Context, c net.Conn) context.Context {
	switch c := c.(type) {
	case *scannedConn:
		return context.WithValue(ctx, framingKey{}, &c.framing)
	case *scannedTLSConn:
		return context.WithValue(ctx, framingKey{}, &c.framing)
	}
	return ctx
}

// checkFraming refuses a request on a connection where a request had both
// Content-Length and Transfer-Encoding, and closes after answering a
// connection whose scanner stopped; see above.
func (s *Server) checkFraming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := r.Context().Value(framingKey{}).(*framing); ok {
			switch f.verdict.Load() {
			case framingAmbiguous:
				s.log.Debug("refused a request with both Content-Length and Transfer-Encoding", "remote", remoteHost(r))
				w.Header().Set("Connection", "close")
				writeError(w, r, badRequest(CodeAmbiguousLength, "the request has both Content-Length and Transfer-Encoding"))
				return
			case framingUnchecked:
				w.Header().Set("Connection", "close")
			}
		}
		next.ServeHTTP(w, r)
	})
}

// lengthScanner follows the framing of the HTTP/1 requests on a connection
// as net/http reads them: a header block ends at the first empty line
// (lines end at LF; a CR before it is dropped), its body is Content-Length
// bytes (none without one), and the next request follows, after any CR and
// LF bytes. It looks at each header block for Content-Length and
// Transfer-Encoding, names compared ignoring ASCII case (with spaces before
// the colon too, which net/http refuses but a proxy might not), and it
// stops where it could not go on exactly (see the framing constants). It
// keeps no bytes: a few counters, whatever the reads' sizes.
type lengthScanner struct {
	state uint8
	pos   uint8 // bytes of the preface or of a field name matched so far
	field uint8 // the field whose name is matched: fieldCL or fieldTE
	block uint8 // flags of the current header block
	cl    int64 // the Content-Length value being read
	first int64 // the block's first Content-Length (with blockCL)
	skip  int64 // body bytes still to pass
}

const (
	scanStart       = iota // the connection's first byte: the HTTP/2 preface?
	scanPreface            // matching the preface, pos bytes so far
	scanRequest            // before a request line: CR and LF skipped
	scanRequestLine        // in a request line, to its LF
	scanLine               // at the start of a header line
	scanLineCR             // a CR at the start of a header line
	scanName               // matching a field name, pos bytes so far
	scanAfterName          // after a whole field name: blanks, then a colon?
	scanLength             // in a Content-Length value
	scanSkipLine           // in a line of no interest, to its LF
	scanBody               // skip bytes of a body still to pass
	scanStopped
)

const (
	fieldCL = iota
	fieldTE
)

// Flags of a header block.
const (
	blockCL       = 1 << iota // a Content-Length value was read into first
	blockTE                   // Transfer-Encoding
	blockBadCL                // a Content-Length that is not one number
	blockDigits               // the value being read has digits
	blockTrailing             // the value being read has blanks after its digits
)

var (
	fieldNames = [...]string{fieldCL: "content-length", fieldTE: "transfer-encoding"}
	h2Preface  = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// scan reads the next bytes of the connection and reports why it stopped,
// or framingFollowed.
func (s *lengthScanner) scan(p []byte) uint8 {
	for i := 0; i < len(p); {
		b := p[i]
		switch s.state {
		case scanStart:
			if b == 'P' {
				s.state, s.pos = scanPreface, 0
			} else {
				s.state = scanRequest
			}
		case scanPreface:
			if b == h2Preface[s.pos] {
				s.pos++
				i++
				if int(s.pos) == len(h2Preface) {
					return s.stop(framingHTTP2)
				}
				continue
			}
			// Not the preface: read on from where the mismatch is, in
			// the request line, or in the (empty) header block after it.
			switch {
			case s.pos <= 15:
				s.state = scanRequestLine
			case s.pos == 16:
				s.state = scanLine
			case s.pos == 17:
				s.state = scanLineCR
			default:
				// A PRI request without headers, then something: net/http
				// takes it for an HTTP/2 upgrade and closes after it.
				return s.stop(framingUnchecked)
			}
		case scanRequest:
			if b != '\r' && b != '\n' {
				s.state = scanRequestLine
				continue
			}
			i++
		case scanRequestLine, scanSkipLine:
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return framingFollowed
			}
			i += j + 1
			s.state = scanLine
		case scanLine:
			switch b {
			case '\n':
				i++
				if v := s.endBlock(); v != framingFollowed {
					return v
				}
				continue
			case '\r':
				s.state = scanLineCR
			case ' ', '\t':
				// A folded line (obs-fold): net/http appends it to the
				// field before; another parser may not.
				return s.stop(framingUnchecked)
			case 'c', 'C':
				s.state, s.field, s.pos = scanName, fieldCL, 1
			case 't', 'T':
				s.state, s.field, s.pos = scanName, fieldTE, 1
			default:
				s.state = scanSkipLine
			}
			i++
		case scanLineCR:
			if b != '\n' {
				return s.stop(framingUnchecked) // net/http refuses a line that starts with a lone CR
			}
			i++
			if v := s.endBlock(); v != framingFollowed {
				return v
			}
		case scanName:
			name := fieldNames[s.field]
			if lower(b) != name[s.pos] {
				s.state = scanSkipLine
				continue
			}
			i++
			if s.pos++; int(s.pos) == len(name) {
				s.state = scanAfterName
			}
		case scanAfterName:
			switch b {
			case ' ', '\t':
				i++
			case ':':
				i++
				if s.field == fieldTE {
					s.block |= blockTE
					s.state = scanSkipLine
				} else {
					s.block &^= blockDigits | blockTrailing
					s.cl = 0
					s.state = scanLength
				}
			default:
				s.state = scanSkipLine // another field: Content-Lengthy
			}
		case scanLength:
			switch {
			case b >= '0' && b <= '9':
				d := int64(b - '0')
				if s.block&blockTrailing != 0 || s.cl > (math.MaxInt64-d)/10 {
					s.block |= blockBadCL
					s.state = scanSkipLine
					continue
				}
				s.cl = s.cl*10 + d
				s.block |= blockDigits
				i++
			case b == ' ' || b == '\t' || b == '\r':
				if s.block&blockDigits != 0 {
					s.block |= blockTrailing
				}
				i++
			case b == '\n':
				switch {
				case s.block&blockDigits == 0:
					s.block |= blockBadCL // empty
				case s.block&blockCL != 0 && s.cl != s.first:
					s.block |= blockBadCL // two values
				default:
					s.block |= blockCL
					s.first = s.cl
				}
				s.state = scanLine
				i++
			default:
				s.block |= blockBadCL
				s.state = scanSkipLine
			}
		case scanBody:
			n := int64(len(p) - i)
			if n >= s.skip {
				i += int(s.skip)
				s.skip = 0
				s.state = scanRequest
				continue
			}
			s.skip -= n
			return framingFollowed
		default: // scanStopped
			return framingFollowed
		}
	}
	return framingFollowed
}

// endBlock ends a header block: the body to skip, or why to stop.
func (s *lengthScanner) endBlock() uint8 {
	block := s.block
	s.block = 0
	switch {
	case block&blockCL != 0 && block&blockTE != 0:
		return s.stop(framingAmbiguous)
	case block&(blockTE|blockBadCL) != 0:
		return s.stop(framingUnchecked)
	case block&blockCL != 0 && s.first > 0:
		s.state, s.skip = scanBody, s.first
	default:
		s.state = scanRequest
	}
	return framingFollowed
}

func (s *lengthScanner) stop(v uint8) uint8 {
	s.state = scanStopped
	return v
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
