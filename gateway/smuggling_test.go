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
	if !resp.Close { // ReadResponse takes Connection: close out of the header into Close
		rc.t.Errorf("answer does not say Connection: close")
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

// TestSlowHeadersCut: a client that sends its headers a line at a time,
// never ending them (slowloris), is cut at ReadHeaderTimeout (10s in
// production; shortened here), without an answer.
func TestSlowHeadersCut(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	g := serveForTest(t, func(s *Server) { s.readHeaderTimeout = timeout })
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	read := make(chan []byte, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		read <- b
	}()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case b := <-read:
			took := time.Since(start)
			if took < timeout || took > 10*timeout {
				t.Errorf("cut after %v, want about %v", took, timeout)
			}
			if len(b) > 0 {
				t.Errorf("answered %q, want only a close", b)
			}
			return
		case <-tick.C:
			if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
				<-read
				if took := time.Since(start); took < timeout || took > 10*timeout {
					t.Errorf("cut after %v, want about %v", took, timeout)
				}
				return
			}
		}
	}
}

// TestNetHTTPRefusals: the malformed requests net/http answers itself,
// before any handler, in plain text and closing the connection (the README
// lists them); and where the JSON answers take over.
func TestNetHTTPRefusals(t *testing.T) {
	t.Parallel()
	g, echoes := smugglingGateway(t)
	plain := "text/plain; charset=utf-8"
	for _, c := range []struct {
		name, req   string
		status      string // the status line after "HTTP/1.1 "
		contentType string
		body        string
	}{
		{"malformed request line", "GARBAGE-GARBAGE\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"malformed method", "G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"malformed URI", "GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"unsupported version", "GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n",
			"505 HTTP Version Not Supported: unsupported protocol version", plain, "505 HTTP Version Not Supported: unsupported protocol version"},
		{"no Host", "GET /healthz HTTP/1.1\r\n\r\n",
			"400 Bad Request: missing required Host header", plain, "400 Bad Request: missing required Host header"},
		{"malformed Host", "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
			"400 Bad Request: malformed Host header", plain, "400 Bad Request: malformed Host header"},
		{"two Hosts", "GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"invalid field name", "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
			"400 Bad Request: invalid header name", plain, "400 Bad Request: invalid header name"},
		{"space before a colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
			"400 Bad Request: invalid header name", plain, "400 Bad Request: invalid header name"},
		{"line without a colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"control byte in a value", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"headers over MaxHeaderBytes", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1100<<10) + "\r\n\r\n",
			"431 Request Header Fields Too Large", plain, "431 Request Header Fields Too Large"},
		{"unsupported Transfer-Encoding", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
			"501 Not Implemented", plain, "Unsupported transfer encoding"},
		{"two Transfer-Encodings", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
			"501 Not Implemented", plain, "Unsupported transfer encoding"},
		{"invalid Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"negative Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400 Bad Request", plain, "400 Bad Request"},
		{"Content-Length list", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", "400 Bad Request", plain, "400 Bad Request"},
		{"two Content-Lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400 Bad Request", plain, "400 Bad Request"},
		{"unknown Expect", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\na", "417 Expectation Failed", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rc := dialRaw(t, g.addr)
			go func() { _, _ = io.WriteString(rc.c, c.req) }() // a large one is answered before it is all sent
			resp, body := rc.response()
			if got := resp.Proto + " " + resp.Status; got != "HTTP/1.1 "+c.status {
				t.Errorf("status line %q, want %q", got, "HTTP/1.1 "+c.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != c.contentType || body != c.body || !resp.Close {
				t.Errorf("answer %q %q close=%v, want %q %q and close", ct, body, resp.Close, c.contentType, c.body)
			}
		})
	}
	t.Run("over 32 KiB of headers: JSON", func(t *testing.T) {
		t.Parallel()
		rc := dialRaw(t, g.addr)
		rc.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n")
		resp, body := rc.response()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(body, `"HEADERS_TOO_LARGE"`) {
			t.Errorf("answer %s %q, want 431 HEADERS_TOO_LARGE", resp.Status, body)
		}
	})
	t.Cleanup(func() {
		if n := echoes.Load(); n != 0 {
			t.Errorf("the echo route served %d of these requests", n)
		}
	})
}

// scannerCases are byte streams of a connection and what the scanner must
// make of them. probe, appended to a case, is a request with both fields:
// seen (framingAmbiguous) only if the scanner found where the case's
// requests end.
const probe = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"

var scannerCases = []struct {
	name string
	in   string
	want uint8
}{
	{"GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + probe, framingAmbiguous},
	{"two GETs", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n" + probe, framingAmbiguous},
	{"no headers", "GET / HTTP/1.0\r\n\r\n" + probe, framingAmbiguous},
	{"bare LF", "GET / HTTP/1.1\nHost: x\n\n" + probe, framingAmbiguous},
	{"leading CRLF", "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n" + probe, framingAmbiguous},
	{"body skipped", "POST / HTTP/1.1\r\nContent-Length: " + itoa(len(probe)) + "\r\n\r\n" + probe, framingFollowed},
	{"body skipped, then a request", "POST / HTTP/1.1\r\nContent-Length: " + itoa(len(probe)) + "\r\n\r\n" + probe + probe, framingAmbiguous},
	{"body, CRLF, request", "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n" + probe, framingAmbiguous},
	{"zero length", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + probe, framingAmbiguous},
	{"blanks around the length", "POST / HTTP/1.1\r\nContent-Length: \t 2 \t\r\n\r\nab" + probe, framingAmbiguous},
	{"no blank before the length", "POST / HTTP/1.1\r\nContent-Length:2\r\n\r\nab" + probe, framingAmbiguous},
	{"odd case length", "POST / HTTP/1.1\r\ncONTENT-lENGTH: 2\r\n\r\nab" + probe, framingAmbiguous},
	{"the same length twice", "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab" + probe, framingAmbiguous},
	{"a large length", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n" + probe, framingFollowed},
	{"length overflow", "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", framingUnchecked},
	{"two lengths", "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", framingUnchecked},
	{"a length list", "POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab", framingUnchecked},
	{"an empty length", "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", framingUnchecked},
	{"a signed length", "POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab", framingUnchecked},
	{"two numbers", "POST / HTTP/1.1\r\nContent-Length: 2 2\r\n\r\nab", framingUnchecked},
	{"a CR in the length", "POST / HTTP/1.1\r\nContent-Length: 2\r2\r\n\r\nab", framingUnchecked},
	{"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + probe, framingUnchecked},
	{"any coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", framingUnchecked},
	{"an empty coding", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", framingUnchecked},
	{"blank before the colon", "POST / HTTP/1.1\r\nTransfer-Encoding \t: chunked\r\n\r\n", framingUnchecked},
	{"both", probe, framingAmbiguous},
	{"both, odd case", "POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\nCONTENT-length: 1\r\n\r\n", framingAmbiguous},
	{"both, after a body", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + probe, framingAmbiguous},
	{"other fields", "GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Lengthy: 5\r\nContent: 1\r\nTransfer: 2\r\nTransfer-Encodings: chunked\r\n" +
		"X-Content-Length: 5\r\nX-Transfer-Encoding: chunked\r\nT: Transfer-Encoding: chunked\r\nC\r\nT\r\nContent-Length\r\n\r\n" + probe, framingAmbiguous},
	{"fields in the request line", "GET /\r\nContent-Length:5\r\nTransfer-Encoding:chunked HTTP/1.1\r\n\r\n" + probe, framingAmbiguous},
	{"folded line", "GET / HTTP/1.1\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n", framingUnchecked},
	{"folded with a tab", "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n\r\n", framingUnchecked},
	{"a line with a lone CR", "GET / HTTP/1.1\r\n\rX: y\r\n\r\n", framingUnchecked},
	{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + probe, framingHTTP2},
	{"a PRI request", "PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n", framingUnchecked},
	{"a PRI request with fields", "PRI * HTTP/2.0\r\nHost: x\r\n\r\n" + probe, framingAmbiguous},
	{"a PRI request with a length", "PRI * HTTP/2.0\r\nContent-Length: 2\r\n\r\nab" + probe, framingAmbiguous},
	{"a PRI line with LF", "PRI * HTTP/2.0\n\n" + probe, framingAmbiguous},
	{"the preface later", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", framingFollowed},
	{"POST first", "POST / HTTP/1.1\r\nHost: x\r\n\r\n" + probe, framingAmbiguous},
	{"P then nothing", "P", framingFollowed},
}

// TestLengthScanner: every case, read whole, a byte at a time and in two
// reads split at every byte.
func TestLengthScanner(t *testing.T) {
	t.Parallel()
	run := func(in string, sizes func(i int) int) uint8 {
		var s lengthScanner
		for p := []byte(in); len(p) > 0; {
			n := min(sizes(len(in)-len(p)), len(p))
			if v := s.scan(p[:n]); v != framingFollowed {
				return v
			}
			p = p[n:]
		}
		return framingFollowed
	}
	for _, c := range scannerCases {
		t.Run(c.name, func(t *testing.T) {
			if got := run(c.in, func(int) int { return len(c.in) }); got != c.want {
				t.Errorf("whole: %d, want %d", got, c.want)
			}
			if got := run(c.in, func(int) int { return 1 }); got != c.want {
				t.Errorf("a byte at a time: %d, want %d", got, c.want)
			}
			for split := 1; split < len(c.in); split++ {
				if got := run(c.in, func(at int) int {
					if at < split {
						return split - at
					}
					return len(c.in)
				}); got != c.want {
					t.Fatalf("split at %d: %d, want %d", split, got, c.want)
				}
			}
		})
	}
}

// FuzzLengthScanner checks the scanner against net/http's own reading of
// the same bytes: after each request net/http reads, the scanner is either
// stopped or at the start of the next request, and it has stopped by the
// end of any request that net/http read as chunked.
func FuzzLengthScanner(f *testing.F) {
	for _, c := range scannerCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := bytes.NewReader(data)
		br := bufio.NewReader(rd)
		consumed := func() int { return len(data) - rd.Len() - br.Buffered() }
		var s lengthScanner
		verdict, at := uint8(framingFollowed), 0
		lastMethod := ""
		for k := 1; ; k++ {
			if lastMethod == http.MethodPost { // as net/http's server does
				peek, _ := br.Peek(4)
				n := 0
				for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
					n++
				}
				_, _ = br.Discard(n)
			}
			req, err := http.ReadRequest(br)
			if err != nil || req.ProtoMajor != 1 || !serverTakes(req) {
				return
			}
			chunked := len(req.TransferEncoding) > 0
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			end := consumed()
			if verdict == framingFollowed {
				verdict = s.scan(data[at:end])
				at = end
			}
			if verdict == framingFollowed && s.state != scanRequest {
				t.Fatalf("after request %d (%d bytes) the scanner is in state %d, not at a request", k, end, s.state)
			}
			if chunked {
				if verdict == framingFollowed {
					t.Fatalf("request %d is chunked, and the scanner goes on", k)
				}
				return
			}
			lastMethod = req.Method
		}
	})
}

// serverTakes reports whether net/http's server, stricter than
// ReadRequest, serves req: valid field names, a Host on HTTP/1.1.
func serverTakes(req *http.Request) bool {
	for k := range req.Header {
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
				return false
			}
		}
	}
	return !req.ProtoAtLeast(1, 1) || len(req.Header["Host"]) == 1 || req.Host != ""
}

// browserRequest is the header block of an EventSource reconnect from
// Chromium through a proxy: 732 bytes, 16 fields.
const browserRequest = "GET /api/reports/0b1d6c2e-8f0a-4c7e-9d0e-5a3f7c1b2e4d/stream?includeReport=true HTTP/1.1\r\n" +
	"Host: reports.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
	"Accept: text/event-stream\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cache-Control: no-cache\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTQyIiwiam9icyI6WyIqIl19.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg\r\n" +
	"Last-Event-ID: 1795752017394-0\r\n" +
	"Origin: https://app.example.com\r\n" +
	"Referer: https://app.example.com/jobs/0b1d6c2e\r\n" +
	"Sec-Fetch-Dest: empty\r\n" +
	"Sec-Fetch-Mode: cors\r\n" +
	"Sec-Fetch-Site: same-site\r\n" +
	"X-Forwarded-For: 203.0.113.7\r\n" +
	"X-Forwarded-Proto: https\r\n" +
	"\r\n"

// BenchmarkLengthScanner: the scanner's cost per request header block
// (each op is one block, read whole, as net/http's 4 KiB reads get it), a
// publish with its body, and for scale net/http's own parse of the same
// browser block.
func BenchmarkLengthScanner(b *testing.B) {
	publish := "POST /api/reports/j-1/events HTTP/1.1\r\nHost: reports.example.com\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3In0.c2ln\r\n" +
		"Content-Type: application/json\r\nIdempotency-Key: 7f0c1e9a\r\nContent-Length: 512\r\n\r\n" + strings.Repeat("x", 512)
	for _, c := range []struct{ name, in string }{
		{"browser", browserRequest},
		{"minimal", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"publish", publish},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := []byte(c.in)
			s := lengthScanner{state: scanRequest}
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if s.scan(in) != framingFollowed || s.state != scanRequest {
					b.Fatal("the scanner lost the framing")
				}
			}
		})
	}
	b.Run("browser, a byte at a time", func(b *testing.B) {
		in := []byte(browserRequest)
		s := lengthScanner{state: scanRequest}
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			for i := range in {
				s.scan(in[i : i+1])
			}
		}
	})
	b.Run("net/http ReadRequest, browser", func(b *testing.B) {
		r := strings.NewReader(browserRequest)
		br := bufio.NewReader(r)
		b.SetBytes(int64(len(browserRequest)))
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(browserRequest)
			br.Reset(r)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}
