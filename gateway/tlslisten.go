package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// http2ALPN is HTTP/2's ALPN protocol name.
const http2ALPN = "h2"

// tlsListener serves TLS (Config.TLSCertFile) on a TCP listener with the
// smuggling scan (see smuggling.go) kept where it can work. net/http speaks
// HTTP/2 only on a *tls.Conn, and the scanner needs the decrypted bytes of
// an HTTP/1 connection, which net/http reads from the *tls.Conn itself. So
// the handshake is done here, before Accept returns the connection, and
// the protocol the client chose by ALPN decides what net/http gets:
//
//   - h2: the *tls.Conn itself. HTTP/2 frames every message: nothing to
//     smuggle.
//   - http/1.1 or none: a scannedTLSConn, whose decrypted reads go through
//     the scanner. net/http sets Request.TLS from its ConnectionState, and
//     does not take it for cleartext HTTP/2.
//
// Each handshake runs in a goroutine of its own, bounded by timeout, so a
// slow client holds up no other. Close ends them and waits for them and
// for the accept loop.
type tlsListener struct {
	net.Listener // the TCP listener
	config       *tls.Config
	timeout      time.Duration
	log          *slog.Logger

	conns  chan net.Conn // handshaken, for Accept
	errs   chan error    // the TCP listener's Accept errors, for Accept
	ctx    context.Context
	cancel context.CancelFunc // by Close: ends the loop and the handshakes
	wg     sync.WaitGroup     // the loop and the handshakes

	closeOnce sync.Once
	closeErr  error
}

func newTLSListener(l net.Listener, config *tls.Config, timeout time.Duration, log *slog.Logger) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tlsListener{
		Listener: l, config: config, timeout: timeout, log: log,
		conns: make(chan net.Conn), errs: make(chan error), ctx: ctx, cancel: cancel,
	}
	tl.wg.Go(tl.acceptLoop)
	return tl
}

// acceptLoop accepts TCP connections and starts their handshakes. An
// Accept error is handed to Accept as is, for net/http to back off from or
// return with; the loop waits until it is taken, so it retries no faster
// than net/http does.
func (l *tlsListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.ctx.Done():
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.wg.Go(func() { l.handshake(c) })
	}
}

// handshake does c's TLS handshake and hands the connection to Accept.
func (l *tlsListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.config)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := tc.HandshakeContext(ctx) // closes c if ctx ends first
	cancel()
	if err != nil {
		l.handshakeFailed(c, err)
		return
	}
	var hc net.Conn = tc
	if tc.ConnectionState().NegotiatedProtocol != http2ALPN {
		hc = &scannedTLSConn{Conn: tc}
	}
	select {
	case l.conns <- hc:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// handshakeFailed closes a connection whose handshake failed, answering a
// client that sent plain HTTP with a 400 that says so, as net/http does.
func (l *tlsListener) handshakeFailed(c net.Conn, err error) {
	defer c.Close()
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader[:]) {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
	}
	l.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
}

// looksLikeHTTP reports whether the first bytes of a connection, read as a
// TLS record header, are the start of an HTTP/1 request.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH"} {
		if bytes.HasPrefix(b, []byte(m)) {
			return true
		}
	}
	return false
}

// Accept returns the next handshaken connection.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close closes the TCP listener, ends the handshakes under way (closing
// their connections) and waits for them.
func (l *tlsListener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.closeErr = l.Listener.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

// closeNow closes c at once: a TLS connection's TCP connection, without
// the close_notify alert that tls.Conn.Close writes first, which waits up
// to 5s for a client that stopped reading.
func closeNow(c net.Conn) error {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		return tc.NetConn().Close()
	}
	return c.Close()
}
