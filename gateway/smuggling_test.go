package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A request smuggled past a proxy needs the proxy and the gateway to
// disagree on where a request ends: one goes by Content-Length, the other by
// Transfer-Encoding. net/http goes by Transfer-Encoding and hides both
// fields from handlers; these tests talk raw HTTP/1 over TCP to Serve.

// smugglingGateway serves with a POST /echo route that answers the body it
// read, and counts its calls.
func smugglingGateway(t *testing.T) (*servedGateway, *atomic.Int64) {
	t.Helper()
	echoes := &atomic.Int64{}
	g := serveForTest(t, func(s *Server) {
		s.Handle(http.MethodPost, "/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			echoes.Add(1)
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = w.Write(b)
		}))
	})
	return g, echoes
}

// rawConn is one client connection written byte for byte.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatal(err)
	}
}

// response reads one response and its body.
func (rc *rawConn) response() (*http.Response, string) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// closed checks that the server closed the connection: nothing more comes,
// then EOF.
func (rc *rawConn) closed() {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(rc.br)
	switch {
	case len(b) > 0:
		rc.t.Errorf("after the last answer the server sent %q", b)
	case err != nil:
		rc.t.Errorf("after the last answer: %v, want EOF", err)
	}
}

// refused checks the answer to a request with both Content-Length and
// Transfer-Encoding: 400 AMBIGUOUS_LENGTH, then the connection closed.
func (rc *rawConn) refused() {
	rc.t.Helper()
	resp, body := rc.response()
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != http.StatusBadRequest ||
		e.Code != "AMBIGUOUS_LENGTH" || e.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
		rc.t.Errorf("answer %s %q %q, want 400 application/json with code AMBIGUOUS_LENGTH", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if !resp.Close || resp.Header.Get("Connection") != "close" {
		rc.t.Errorf("answer says Connection %q, want close", resp.Header.Get("Connection"))
	}
	rc.closed()
}

// answered checks one answer's status and body, and whether it says it
// closes the connection.
func (rc *rawConn) answered(status int, body string, closes bool) {
	rc.t.Helper()
	resp, got := rc.response()
	if resp.StatusCode != status || (body != "" && got != body) {
		rc.t.Errorf("answer %s %q, want %d %q", resp.Status, got, status, body)
	}
	if resp.Close != closes {
		rc.t.Errorf("answer closes the connection: %v, want %v (Connection: %q)", resp.Close, closes, resp.Header.Get("Connection"))
	}
}

// smuggled is a request hidden in a chunked body for a proxy that reads by
// Content-Length, or after it.
const smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

// TestAmbiguousLengthRefused: a request with both Content-Length and
// Transfer-Encoding is refused whatever the order, case or spelling of the
// two fields, and nothing after it on its connection is read.
func TestAmbiguousLengthRefused(t *testing.T) {
	t.Parallel()
	g, echoes := smugglingGateway(t)
	for _, c := range []struct{ name, head string }{
		{"CL then TE", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"},
		{"TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n"},
		{"odd case", "cOnTeNt-LeNgTh: 5\r\ntRANSFER-eNCODING: Chunked\r\n"},
		{"lower case", "transfer-encoding: chunked\r\ncontent-length: 5\r\n"},
		{"other fields around", "X-A: 1\r\nContent-Length: 5\r\nX-B: transfer-encoding\r\nTransfer-Encoding: chunked\r\nX-C: 2\r\n"},
		{"bare LF", "Content-Length: 5\nTransfer-Encoding: chunked\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, g.addr)
			end := "\r\n"
			if strings.Contains(c.head, "\n") && !strings.Contains(c.head, "\r") {
				end = "\n"
			}
			rc.send("POST /echo HTTP/1.1" + end + "Host: x" + end + c.head + end + "0\r\n\r\n" + smuggled)
			rc.refused()
		})
	}
	t.Run("HTTP/1.0", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
		rc.refused()
	})
	t.Run("after a request on the same connection", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		rc.answered(http.StatusOK, "hello", false)
		rc.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
		rc.refused()
	})
	t.Run("split across writes", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		for _, s := range []string{"POST /echo HTTP/1.1\r\nHost: x\r\nCont", "ent-Len", "gth: 5\r\nTransfer-", "Encoding: chunked\r", "\n\r\n0\r\n\r\n" + smuggled} {
			rc.send(s)
			time.Sleep(5 * time.Millisecond)
		}
		rc.refused()
	})
	if n := echoes.Load(); n != 1 {
		t.Errorf("the echo route served %d requests, want 1 (only the unambiguous one)", n)
	}
}

// TestChunkedClosesTheConnection: a chunked request is served, then its
// connection is closed, since nothing after a chunked body is checked.
func TestChunkedClosesTheConnection(t *testing.T) {
	t.Parallel()
	g, _ := smugglingGateway(t)
	t.Run("POST to a route", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" + smuggled)
		rc.answered(http.StatusOK, "hello world", true)
		rc.closed()
	})
	t.Run("POST to a GET route", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /healthz HTTP/1.1\r\nHost: x\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + smuggled)
		resp, body := rc.response()
		if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(body, `"METHOD_NOT_ALLOWED"`) || !resp.Close {
			t.Errorf("answer %s %q close=%v, want 405 METHOD_NOT_ALLOWED and close", resp.Status, body, resp.Close)
		}
		rc.closed()
	})
	t.Run("after a request on the same connection", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send(smuggled)
		rc.answered(http.StatusOK, "", false)
		rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		rc.answered(http.StatusOK, "ok", true)
		rc.closed()
	})
	// HTTP/1.0 has no chunked coding: net/http ignores the field and reads
	// no body, so the "body" would be read as the next request.
	t.Run("HTTP/1.0", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled)
		rc.answered(http.StatusOK, "", true)
		rc.closed()
	})
	// A folded line (obs-fold) could hide a field from one parser and not
	// another: the connection is closed after it too.
	t.Run("folded header line", func(t *testing.T) {
		rc := dialRaw(t, g.addr)
		rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\nhello" + smuggled)
		rc.answered(http.StatusOK, "hello", true)
		rc.closed()
	})
}

// TestContentLengthKeepAlive: requests framed by Content-Length alone keep
// their connection, pipelined too.
func TestContentLengthKeepAlive(t *testing.T) {
	t.Parallel()
	g, echoes := smugglingGateway(t)
	rc := dialRaw(t, g.addr)
	rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-LENGTH:  6 \r\nX-Transfer-Encoding: chunked\r\n\r\nworld!" +
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.answered(http.StatusOK, "hello", false)
	rc.answered(http.StatusOK, "world!", false)
	rc.answered(http.StatusOK, "", false)
	// A body that looks like a request with both fields is only a body.
	body := "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
	rc.answered(http.StatusOK, body, false)
	rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	rc.answered(http.StatusOK, "ok", true)
	rc.closed()
	if n := echoes.Load(); n != 4 {
		t.Errorf("echo served %d requests, want 4", n)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestH2CPriorKnowledge: HTTP/2 without TLS (the client knows to use it)
// still works: the scanner leaves a connection that starts with the HTTP/2
// preface alone.
func TestH2CPriorKnowledge(t *testing.T) {
	t.Parallel()
	g, _ := smugglingGateway(t)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 3 {
		var body io.Reader = strings.NewReader("hello")
		if i == 1 {
			// No length: DATA frames until END_STREAM.
			pr, pw := io.Pipe()
			go func() { _, _ = io.WriteString(pw, "hello"); pw.Close() }()
			body = pr
		}
		resp, err := client.Post("http://"+g.addr+"/echo", "text/plain", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || string(b) != "hello" || resp.Header.Get("Connection") != "" {
			t.Errorf("POST %d: %s %s %q, Connection %q; want HTTP/2.0 200 \"hello\"", i, resp.Proto, resp.Status, b, resp.Header.Get("Connection"))
		}
	}
}

// TestSmugglingCheckWithoutServe: served through Handler alone (no Serve,
// so no scanned connection), requests are answered as usual.
func TestSmugglingCheckWithoutServe(t *testing.T) {
	t.Parallel()
	g, _ := smugglingGateway(t)
	req := httptest.NewRequest(http.MethodPost, "/echo", bytes.NewReader([]byte("hi")))
	req.Header.Set("Content-Length", "2")
	req.Header.Set("Transfer-Encoding", "chunked")
	rec := httptest.NewRecorder()
	g.s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Body.String() != "hi" || rec.Header().Get("Connection") != "" {
		t.Errorf("answer %d %q, Connection %q; want 200 \"hi\"", rec.Code, rec.Body, rec.Header().Get("Connection"))
	}
}
