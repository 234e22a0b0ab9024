package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/ssegate/pkg/event"
)

// tcpPair returns both ends of a loopback TCP connection. With small, the
// server's has a small send buffer and the client's a small receive
// buffer, so that a client that does not read fills them after a few KiB.
func tcpPair(t testing.TB, small bool) (server *net.TCPConn, client *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server, client = s.(*net.TCPConn), c.(*net.TCPConn)
	if small {
		_ = server.SetWriteBuffer(4 << 10)
		_ = client.SetReadBuffer(4 << 10)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// tcpSink is tcpPair's server end as a chunked connSink that writes through
// an nbWriter, and its client end; it skips the test where there is none.
func tcpSink(t *testing.T, small bool) (*connSink, *net.TCPConn) {
	t.Helper()
	server, client := tcpPair(t, small)
	cs := newConnSink(server, true)
	if cs.raw == nil {
		t.Skip("no writes without waiting on this system")
	}
	return cs, client
}

// chunkedBody reads a chunked HTTP body from r until its last chunk.
func chunkedBody(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(r)))
	if err != nil {
		t.Fatalf("chunked body: %v (read %d bytes)", err, len(b))
	}
	return string(b)
}

// A flush that does not wait writes what the socket takes, holds the rest
// (with later chunks behind it), and a flush that waits writes it all, in
// order and framed as it would have been.
func TestConnSinkFlushNowHoldsWhatTheSocketRefuses(t *testing.T) {
	t.Parallel()
	cs, client := tcpSink(t, true)
	nb := newNBWriter()
	var want strings.Builder
	piece := func(i int) []byte {
		return fmt.Appendf(nil, "data: %d %s\n\n", i, strings.Repeat("x", 700))
	}
	cs.nb = nb
	i := 0
	for ; !cs.holding(); i++ {
		if i == 10000 {
			t.Fatal("10,000 KiB written to a client that reads nothing: the socket never filled")
		}
		b := piece(i)
		want.Write(b)
		_, _ = cs.Write(b)
		if err := cs.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// More chunks behind the held bytes: each with its own header, which
	// is written from scratch and must be copied while held.
	for j := range 5 {
		for k := range 3 {
			b := piece(100000 + 10*j + k)
			want.Write(b)
			_, _ = cs.Write(b)
		}
		if err := cs.Flush(); err != nil {
			t.Fatal(err)
		}
		if !cs.holding() {
			t.Fatalf("chunk %d behind held bytes was written at once: the client reads nothing", j)
		}
	}
	cs.nb = nil
	t.Logf("the socket filled after %d chunks; %d pieces held", i, len(cs.held))

	got := make(chan string, 1)
	go func() {
		body := bufio.NewReader(client)
		got <- chunkedBody(t, body)
	}()
	_ = cs.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := cs.Flush(); err != nil {
		t.Fatalf("flush that waits: %v", err)
	}
	if cs.holding() {
		t.Fatal("a flush that waits left bytes held")
	}
	cs.end()
	select {
	case body := <-got:
		if body != want.String() {
			t.Fatalf("body differs from what was written: got %d bytes, want %d", len(body), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no whole body after the flush that waits")
	}
}

// A sink whose connection is gone reports the error from a flush that does
// not wait, and holds nothing.
func TestConnSinkFlushNowError(t *testing.T) {
	t.Parallel()
	cs, client := tcpSink(t, false)
	_ = client.SetLinger(0)
	client.Close() // a reset: the next writes fail
	cs.nb = newNBWriter()
	var err error
	for range 100 {
		_, _ = cs.Write([]byte("data: x\n\n"))
		if err = cs.Flush(); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a reset connection never failed")
	}
	if cs.holding() || !cs.broken {
		t.Fatalf("after a failed write: holding %v, broken %v", cs.holding(), cs.broken)
	}
}

// A flush of many pieces (a replay) writes them all as one chunk, and the
// sink then goes back to its own small array: it keeps no array that size,
// and no piece, for the rest of the stream's life.
func TestConnSinkDropsAReplaysArray(t *testing.T) {
	t.Parallel()
	cs, client := tcpSink(t, false)
	var want strings.Builder
	for i := range 50 {
		piece := fmt.Sprintf("id: %d\ndata: x\n\n", i)
		want.WriteString(piece)
		_, _ = cs.Write([]byte(piece))
	}
	if err := cs.Flush(); err != nil {
		t.Fatal(err)
	}
	if cap(cs.vec) != len(cs.vecArr) || &cs.vec[:1][0] != &cs.vecArr[0] {
		t.Errorf("after a flush of 50 pieces the sink keeps an array of %d", cap(cs.vec))
	}
	for i, b := range cs.vecArr[1:] {
		if b != nil {
			t.Errorf("the sink's array still holds piece %d: %q", i+1, b)
		}
	}
	_, _ = cs.Write([]byte("id: 50\ndata: x\n\n"))
	want.WriteString("id: 50\ndata: x\n\n")
	if err := cs.Flush(); err != nil {
		t.Fatal(err)
	}
	cs.end()
	if got := chunkedBody(t, client); got != want.String() {
		t.Errorf("read %q, want %q", got, want.String())
	}
}

// fanStream is a started stream on a taken-over loopback connection.
type fanStream struct {
	c      *client
	client *net.TCPConn
	ended  chan string
}

func newFanStream(t *testing.T, m *metrics, small bool) *fanStream {
	t.Helper()
	cs, conn := tcpSink(t, small)
	fs := &fanStream{c: newClient(1000, false), client: conn, ended: make(chan string, 1)}
	w := &writer{out: cs, writeTimeout: time.Minute, metrics: m}
	st := newStream(w, fs.c, nil, time.Hour, time.Hour, func(reason string) { cs.end(); fs.ended <- reason })
	st.start(context.Background())
	t.Cleanup(func() { fs.c.kick(reasonShutdown, 0) })
	return fs
}

// One client that reads nothing, among others in the same chunk, holds up
// none of them: the fan-out's goroutine writes to each without waiting,
// and the stalled one waits on a goroutine of its own (here until its
// client goes; a write timeout would cut it as slow).
func TestFanOutStalledClientHoldsUpNoOne(t *testing.T) {
	t.Parallel()
	m := newMetrics(prometheus.NewRegistry())
	const n = 5
	var fans []*fanStream
	for i := range n {
		fans = append(fans, newFanStream(t, m, i == n/2))
	}
	stalled := fans[n/2] // in the middle of the chunk
	pad := strings.Repeat("x", 8000)
	var frames []*frame
	for s := 1; s <= 40; s++ {
		f := testFrame(t, fmt.Sprintf("%d-0", 1000+s), event.TypeProgress)
		f.wire = append(f.wire[:len(f.wire)-1:len(f.wire)-1], []byte(": "+pad+"\n\n")...)
		frames = append(frames, f)
	}
	last := frames[len(frames)-1].wire
	type read struct {
		all  chan struct{} // closed once the last event is in
		body chan string   // the whole body, once the stream has ended
	}
	reads := make([]read, n)
	for i, fs := range fans {
		if fs == stalled {
			continue
		}
		rd := read{all: make(chan struct{}), body: make(chan string, 1)}
		reads[i] = rd
		go func() {
			var b bytes.Buffer
			buf := make([]byte, 32<<10)
			in := false
			for {
				k, err := fs.client.Read(buf)
				b.Write(buf[:k])
				if !in && bytes.Contains(b.Bytes(), last) {
					close(rd.all)
					in = true
				}
				if err != nil {
					rd.body <- b.String()
					return
				}
			}
		}()
	}
	js := &jobSub{job: "j"}
	for _, fs := range fans {
		js.clients = append(js.clients, fs.c)
	}
	for _, f := range frames {
		js.mu.Lock()
		js.sendLocked(f, m)
		js.mu.Unlock()
	}
	// 320 KiB for each client: far more than the stalled one's socket
	// buffers take. The others get it all while it stays stalled.
	for i, rd := range reads {
		if rd.all == nil {
			continue
		}
		select {
		case <-rd.all:
		case <-time.After(10 * time.Second):
			t.Fatalf("client %d: not every event within 10 s of a stalled client (its write timeout: 1 minute)", i)
		}
	}
	select {
	case r := <-stalled.ended:
		t.Fatalf("the stalled client's stream ended (%s); it should still be waiting", r)
	default:
	}
	_ = stalled.client.SetLinger(0)
	stalled.client.Close()
	select {
	case r := <-stalled.ended:
		if r != reasonClientGone {
			t.Fatalf("stalled client's stream ended as %q, want %q", r, reasonClientGone)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled client's stream did not end when its client went")
	}
	for i, fs := range fans {
		if fs == stalled {
			continue
		}
		fs.c.kick(reasonShutdown, 0)
		if r := <-fs.ended; r != reasonShutdown {
			t.Fatalf("client %d ended as %q", i, r)
		}
		body := chunkedBody(t, strings.NewReader(<-reads[i].body))
		if want := wires(frames...); body != want {
			t.Fatalf("client %d: body of %d bytes, want the %d bytes of the 40 events in order", i, len(body), len(want))
		}
	}
}
