package sseclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ssegate/ssegate/pkg/event"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every Stream call, so a client that reconnects when it
// should not (or hangs) fails the test instead of blocking it.
const testTimeout = 5 * time.Second

// script serves connection number n (1-based, per server) of a test server.
type script func(n int, w http.ResponseWriter, r *http.Request)

// request is what a test server saw of one connection.
type request struct {
	header http.Header
	at     time.Time // the request arrived
	ended  time.Time // the handler returned (before the client can see the end)
}

// testServer is a loopback SSE server that runs a script per connection and
// records every request.
type testServer struct {
	*httptest.Server
	quit chan struct{} // closed at cleanup: every held handler returns

	mu   sync.Mutex // guards reqs
	reqs []request
}

// newServer starts a test server running s. Its cleanup releases held
// handlers and closes it.
func newServer(tb testing.TB, s script) *testServer {
	tb.Helper()
	ts := &testServer{quit: make(chan struct{})}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		ts.reqs = append(ts.reqs, request{header: r.Header.Clone(), at: time.Now()})
		n := len(ts.reqs)
		ts.mu.Unlock()
		defer func() {
			ts.mu.Lock()
			ts.reqs[n-1].ended = time.Now()
			ts.mu.Unlock()
		}()
		s(n, w, r)
	}))
	tb.Cleanup(func() {
		close(ts.quit)
		ts.Close()
	})
	return ts
}

// requests returns a copy of the requests seen so far.
func (ts *testServer) requests() []request {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.reqs)
}

// hold blocks until the client goes away or the test ends.
func (ts *testServer) hold(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-ts.quit:
	}
}

// startStream answers 200 with the SSE content type and flushes the headers.
func startStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	send(w, "")
}

// send writes s and flushes it.
func send(w http.ResponseWriter, s string) {
	_, _ = io.WriteString(w, s)
	_ = http.NewResponseController(w).Flush()
}

// newClient returns a Client for urls with its own transport, whose idle
// connections are closed at cleanup, and a short DefaultRetry.
func newClient(tb testing.TB, urls ...string) *Client {
	tb.Helper()
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	return &Client{
		URLs:         urls,
		HTTPClient:   &http.Client{Transport: tr},
		DefaultRetry: 10 * time.Millisecond,
	}
}

// testContext returns a context that ends after testTimeout or at cleanup.
func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// collect runs c.Stream until it has received n messages (then the callback
// returns ErrStop) and returns them with Stream's error.
func collect(tb testing.TB, c *Client, n int) ([]event.Message, error) {
	tb.Helper()
	var msgs []event.Message
	err := c.Stream(testContext(tb), func(m event.Message) error {
		msgs = append(msgs, m)
		if len(msgs) == n {
			return ErrStop
		}
		return nil
	})
	return msgs, err
}

// recorder records the OnConnect and OnDisconnect calls of a Client.
type recorder struct {
	mu          sync.Mutex // guards connects, disconnects
	connects    []string
	disconnects []error
}

// attach sets c's callbacks to record into r.
func (r *recorder) attach(c *Client) {
	c.OnConnect = func(url string) {
		r.mu.Lock()
		r.connects = append(r.connects, url)
		r.mu.Unlock()
	}
	c.OnDisconnect = func(err error) {
		r.mu.Lock()
		r.disconnects = append(r.disconnects, err)
		r.mu.Unlock()
	}
}

func (r *recorder) urls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.connects)
}

func (r *recorder) reasons() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.disconnects)
}

// msg is a comparable view of an event.Message.
type msg struct{ id, event, data string }

func view(ms []event.Message) []msg {
	out := make([]msg, len(ms))
	for i, m := range ms {
		out[i] = msg{m.ID, m.Event, string(m.Data)}
	}
	return out
}

// lastEventIDs returns the Last-Event-ID header of each request ("-" when
// absent).
func lastEventIDs(reqs []request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = "-"
		if v := r.header.Values("Last-Event-ID"); len(v) > 0 {
			out[i] = strings.Join(v, ",")
		}
	}
	return out
}

func TestStreamDeliversEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		want     []msg
		wantLast string
	}{
		{
			name: "named and default event names",
			body: "id: 1\nevent: status\ndata: a\n\ndata: b\n\n",
			want: []msg{{"1", "status", "a"}, {"1", "message", "b"}},
			// The unnamed event without id keeps the last ID.
			wantLast: "1",
		},
		{
			name: "heartbeat without id keeps the last id",
			body: "id: 5\nevent: progress\ndata: x\n\n" +
				"event: heartbeat\ndata: {}\n\n" +
				": comment\n\n" +
				"id: 6\nevent: complete\ndata: y\n\n",
			want:     []msg{{"5", "progress", "x"}, {"5", "heartbeat", "{}"}, {"6", "complete", "y"}},
			wantLast: "6",
		},
		{
			name:     "multi-line data and CRLF line ends",
			body:     "id: 1\r\ndata: a\r\ndata: b\r\n\r\ndata:c\rdata\r\r",
			want:     []msg{{"1", "message", "a\nb"}, {"1", "message", "c\n"}},
			wantLast: "1",
		},
		{
			name:     "id-only block moves the last id",
			body:     "id: 1\ndata: a\n\nid: 2\n\ndata: b\n\n",
			want:     []msg{{"1", "message", "a"}, {"2", "message", "b"}},
			wantLast: "2",
		},
		{
			name:     "empty id clears the last id",
			body:     "id: 1\ndata: a\n\nid\ndata: b\n\n",
			want:     []msg{{"1", "message", "a"}, {"", "message", "b"}},
			wantLast: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts *testServer
			ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				// Small writes, so events and lines span reads.
				for b := tt.body; b != ""; {
					k := min(7, len(b))
					send(w, b[:k])
					b = b[k:]
				}
				ts.hold(r)
			})
			c := newClient(t, ts.URL)
			got, err := collect(t, c, len(tt.want))
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if !slices.Equal(view(got), tt.want) {
				t.Errorf("events = %q, want %q", view(got), tt.want)
			}
			if id := c.LastEventID(); id != tt.wantLast {
				t.Errorf("LastEventID() = %q, want %q", id, tt.wantLast)
			}
			if n := len(ts.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			if n := c.Connects(); n != 1 {
				t.Errorf("Connects() = %d, want 1", n)
			}
		})
	}
}

func TestReconnectAfterRetryHint(t *testing.T) {
	t.Parallel()
	const hint = 300 * time.Millisecond
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		switch n {
		case 1:
			send(w, fmt.Sprintf("retry: %d\nid: 7\nevent: status\ndata: first\n\n", hint.Milliseconds()))
			// Returning ends the stream at an event boundary.
		default:
			send(w, "id: 8\ndata: second\n\n")
			ts.hold(r)
		}
	})
	c := newClient(t, ts.URL)
	c.DefaultRetry = 10 * time.Millisecond // the hint must win
	c.Header = http.Header{
		"X-Token": {"secret"},
		"X-Multi": {"a", "b"},
	}
	var rec recorder
	rec.attach(c)

	got, err := collect(t, c, 2)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []msg{{"7", "status", "first"}, {"8", "message", "second"}}
	if !slices.Equal(view(got), want) {
		t.Errorf("events = %q, want %q", view(got), want)
	}

	reqs := ts.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if got, want := lastEventIDs(reqs), []string{"-", "7"}; !slices.Equal(got, want) {
		t.Errorf("Last-Event-ID per request = %q, want %q", got, want)
	}
	for i, r := range reqs {
		for _, h := range []struct {
			key  string
			want []string
		}{
			{"Accept", []string{"text/event-stream"}},
			{"Cache-Control", []string{"no-cache"}},
			{"X-Token", []string{"secret"}},
			{"X-Multi", []string{"a", "b"}},
		} {
			if got := r.header.Values(h.key); !slices.Equal(got, h.want) {
				t.Errorf("request %d: %s = %q, want %q", i+1, h.key, got, h.want)
			}
		}
	}
	// The client can only see the end of connection 1 after its handler
	// returned, so the gap measured here is at most the client's wait.
	if gap := reqs[1].at.Sub(reqs[0].ended); gap < hint || gap > testTimeout {
		t.Errorf("reconnected %v after the stream ended, want at least the %v hint (and a few seconds at most)", gap, hint)
	}
	if got := rec.reasons(); len(got) != 1 || !errors.Is(got[0], ErrClosed) {
		t.Errorf("OnDisconnect reasons = %v, want [%v]", got, ErrClosed)
	}
	if got, want := rec.urls(), []string{ts.URL, ts.URL}; !slices.Equal(got, want) {
		t.Errorf("OnConnect URLs = %q, want %q", got, want)
	}
	if n := c.Connects(); n != 2 {
		t.Errorf("Connects() = %d, want 2", n)
	}
	if id := c.LastEventID(); id != "8" {
		t.Errorf("LastEventID() = %q, want 8", id)
	}
}

func TestUnfinishedBlockIDDoesNotCount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		tail  string // sent after the complete event, without a blank line
		abort bool   // drop the connection instead of ending the response
	}{
		{name: "stream ends", tail: "id: 2\ndata: b\n"},
		{name: "stream ends inside a line", tail: "id: 2\ndata: b"},
		{name: "id-only block", tail: "id: 2\n"},
		{name: "connection drops", tail: "id: 2\ndata: b\n", abort: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts *testServer
			ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				if n == 1 {
					send(w, "retry: 20\nid: 1\ndata: a\n\n")
					send(w, tt.tail)
					if tt.abort {
						panic(http.ErrAbortHandler)
					}
					return
				}
				send(w, "data: c\n\n")
				ts.hold(r)
			})
			c := newClient(t, ts.URL)
			var rec recorder
			rec.attach(c)

			got, err := collect(t, c, 2)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			want := []msg{{"1", "message", "a"}, {"1", "message", "c"}}
			if !slices.Equal(view(got), want) {
				t.Errorf("events = %q, want %q", view(got), want)
			}
			if got, want := lastEventIDs(ts.requests()), []string{"-", "1"}; !slices.Equal(got, want) {
				t.Errorf("Last-Event-ID per request = %q, want %q", got, want)
			}
			if got := rec.reasons(); len(got) != 1 || got[0] == nil {
				t.Errorf("OnDisconnect reasons = %v, want one error", got)
			}
		})
	}
}

func TestSetLastEventIDSeedsConnections(t *testing.T) {
	t.Parallel()
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		if n == 1 {
			// A first block with only a retry field: a dispatch with no
			// id seen on this connection yet.
			send(w, "retry: 20\n\n")
			return
		}
		send(w, "data: x\n\n")
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	c.SetLastEventID("41")
	if id := c.LastEventID(); id != "41" {
		t.Errorf("LastEventID() before Stream = %q, want 41", id)
	}

	got, err := collect(t, c, 1)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []msg{{"41", "message", "x"}}; !slices.Equal(view(got), want) {
		t.Errorf("events = %q, want %q", view(got), want)
	}
	if got, want := lastEventIDs(ts.requests()), []string{"41", "41"}; !slices.Equal(got, want) {
		t.Errorf("Last-Event-ID per request = %q, want %q", got, want)
	}
	if id := c.LastEventID(); id != "41" {
		t.Errorf("LastEventID() = %q, want 41", id)
	}
}

func TestFatalAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		handle   func(w http.ResponseWriter)
		wantErr  error // when set, errors.Is must hold
		wantCode int   // when set, a *StatusError with this code
		wantBody string
	}{
		{
			name:    "204 No Content",
			handle:  func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) },
			wantErr: ErrNoContent,
		},
		{
			name:     "404",
			handle:   func(w http.ResponseWriter) { http.Error(w, "no such job", http.StatusNotFound) },
			wantCode: http.StatusNotFound,
			wantBody: "no such job",
		},
		{
			name:     "400",
			handle:   func(w http.ResponseWriter) { http.Error(w, "bad Last-Event-ID", http.StatusBadRequest) },
			wantCode: http.StatusBadRequest,
			wantBody: "bad Last-Event-ID",
		},
		{
			name:     "503 without RetryServerErrors",
			handle:   func(w http.ResponseWriter) { http.Error(w, "draining", http.StatusServiceUnavailable) },
			wantCode: http.StatusServiceUnavailable,
			wantBody: "draining",
		},
		{
			name: "200 with a wrong Content-Type",
			handle: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, "data: not sse\n\n")
			},
		},
		{
			name: "200 without a Content-Type",
			handle: func(w http.ResponseWriter) {
				w.Header()["Content-Type"] = nil // no sniffing either
				_, _ = io.WriteString(w, "data: x\n\n")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) { tt.handle(w) })
			c := newClient(t, ts.URL)
			var rec recorder
			rec.attach(c)
			called := false
			err := c.Stream(testContext(t), func(event.Message) error {
				called = true
				return nil
			})
			switch {
			case err == nil:
				t.Fatal("Stream returned nil")
			case errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("Stream kept going until the test deadline: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Stream = %v, want %v", err, tt.wantErr)
			}
			if tt.wantCode != 0 {
				var se *StatusError
				switch {
				case !errors.As(err, &se):
					t.Errorf("Stream = %T %v, want *StatusError", err, err)
				case se.Code != tt.wantCode || !strings.Contains(se.Body, tt.wantBody):
					t.Errorf("StatusError{Code: %d, Body: %q}, want code %d and body %q", se.Code, se.Body, tt.wantCode, tt.wantBody)
				case !strings.Contains(se.Error(), strconv.Itoa(tt.wantCode)):
					t.Errorf("Error() = %q, want the code in it", se.Error())
				}
			}
			if called {
				t.Error("callback called")
			}
			if n := len(ts.requests()); n != 1 {
				t.Errorf("%d requests, want 1 (no reconnect)", n)
			}
			// A 200 with a wrong Content-Type is not checked: the doc
			// ("got a 200 answer") and the code (counts only streams)
			// disagree on it.
			if n := c.Connects(); (tt.wantCode != 0 || tt.wantErr != nil) && n != 0 {
				t.Errorf("Connects() = %d, want 0", n)
			}
		})
	}
}

func TestRetryServerErrors(t *testing.T) {
	t.Parallel()
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		startStream(w)
		send(w, "id: 1\ndata: ok\n\n")
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	c.RetryServerErrors = true
	var rec recorder
	rec.attach(c)

	got, err := collect(t, c, 1)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []msg{{"1", "message", "ok"}}; !slices.Equal(view(got), want) {
		t.Errorf("events = %q, want %q", view(got), want)
	}
	if n := len(ts.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	reasons := rec.reasons()
	if len(reasons) != 2 {
		t.Fatalf("OnDisconnect reasons = %v, want two 503s", reasons)
	}
	for _, err := range reasons {
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
			t.Errorf("OnDisconnect reason = %v, want a 503 *StatusError", err)
		}
	}
	if n := c.Connects(); n != 1 {
		t.Errorf("Connects() = %d, want 1 (503s are not connections)", n)
	}
	if got, want := rec.urls(), []string{ts.URL}; !slices.Equal(got, want) {
		t.Errorf("OnConnect URLs = %q, want %q", got, want)
	}
}

func TestRetryServerErrorsStillStopsOn4xx(t *testing.T) {
	t.Parallel()
	ts := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Error(w, "gone", http.StatusGone)
	})
	c := newClient(t, ts.URL)
	c.RetryServerErrors = true
	_, err := collect(t, c, 1)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusGone {
		t.Fatalf("Stream = %v, want a 410 *StatusError", err)
	}
	if n := len(ts.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestURLsRotate(t *testing.T) {
	t.Parallel()
	var ids atomic.Int64
	serve := func(name string) script {
		return func(n int, w http.ResponseWriter, r *http.Request) {
			startStream(w)
			send(w, fmt.Sprintf("retry: 10\nid: %d\ndata: %s\n\n", ids.Add(1), name))
		}
	}
	a := newServer(t, serve("A"))
	b := newServer(t, serve("B"))
	c := newClient(t, a.URL, b.URL)
	var rec recorder
	rec.attach(c)

	got, err := collect(t, c, 4)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	want := []msg{{"1", "message", "A"}, {"2", "message", "B"}, {"3", "message", "A"}, {"4", "message", "B"}}
	if !slices.Equal(view(got), want) {
		t.Errorf("events = %q, want %q", view(got), want)
	}
	ra, rb := a.requests(), b.requests()
	if len(ra) != 2 || len(rb) != 2 {
		t.Errorf("requests: A %d, B %d, want 2 each", len(ra), len(rb))
	}
	// The resume point follows the client from one server to the other.
	if got, want := lastEventIDs(ra), []string{"-", "2"}; !slices.Equal(got, want) {
		t.Errorf("Last-Event-ID at A = %q, want %q", got, want)
	}
	if got, want := lastEventIDs(rb), []string{"1", "3"}; !slices.Equal(got, want) {
		t.Errorf("Last-Event-ID at B = %q, want %q", got, want)
	}
	if got, want := rec.urls(), []string{a.URL, b.URL, a.URL, b.URL}; !slices.Equal(got, want) {
		t.Errorf("OnConnect URLs = %q, want %q", got, want)
	}
}

func TestCallbackError(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	wrapped := fmt.Errorf("handle event: %w", errBoom)
	tests := []struct {
		name    string
		ret     error
		want    error // Stream's result, compared with ==
		wantIs  error // when set, errors.Is(result, wantIs) must hold
		wantNil bool
	}{
		{name: "ErrStop ends with nil", ret: ErrStop, wantNil: true},
		{name: "other error returned as is", ret: errBoom, want: errBoom, wantIs: errBoom},
		{name: "wrapped error returned as is", ret: wrapped, want: wrapped, wantIs: errBoom},
		{name: "io.EOF is the callback's, not a server close", ret: io.EOF, want: io.EOF, wantIs: io.EOF},
		{name: "context.Canceled from the callback", ret: context.Canceled, want: context.Canceled, wantIs: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts *testServer
			ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				send(w, "id: 1\ndata: a\n\nid: 2\ndata: b\n\n")
				ts.hold(r)
			})
			c := newClient(t, ts.URL)
			calls := 0
			err := c.Stream(testContext(t), func(event.Message) error {
				calls++
				return tt.ret
			})
			if tt.wantNil {
				if err != nil {
					t.Errorf("Stream = %v, want nil", err)
				}
			} else if err != tt.want || !errors.Is(err, tt.wantIs) {
				t.Errorf("Stream = %#v, want %#v", err, tt.want)
			}
			if calls != 1 {
				t.Errorf("callback called %d times, want 1", calls)
			}
			if n := len(ts.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
			if id := c.LastEventID(); id != "1" {
				t.Errorf("LastEventID() = %q, want 1", id)
			}
		})
	}
}

func TestContextCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// serve serves connection n; ready tells the test to cancel.
		serve             func(ts *testServer, ready func(), n int, w http.ResponseWriter, r *http.Request)
		readyOnMessage    bool // cancel after the first message instead
		readyOnDisconnect bool // cancel in OnDisconnect instead
	}{
		{
			name: "while waiting for the answer",
			serve: func(ts *testServer, ready func(), n int, w http.ResponseWriter, r *http.Request) {
				ready()
				ts.hold(r)
			},
		},
		{
			name: "while streaming",
			serve: func(ts *testServer, ready func(), n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				send(w, "data: a\n\n")
				ts.hold(r)
			},
			readyOnMessage: true,
		},
		{
			name: "while waiting to reconnect",
			serve: func(ts *testServer, ready func(), n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				send(w, "retry: 60000\n\n")
			},
			readyOnDisconnect: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			readyc := make(chan struct{})
			var once sync.Once
			ready := func() { once.Do(func() { close(readyc) }) }
			var ts *testServer
			ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				tt.serve(ts, ready, n, w, r)
			})
			c := newClient(t, ts.URL)
			if tt.readyOnDisconnect {
				c.OnDisconnect = func(error) { ready() }
			}
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- c.Stream(ctx, func(event.Message) error {
					if tt.readyOnMessage {
						ready()
					}
					return nil
				})
			}()
			select {
			case <-readyc:
			case err := <-done:
				t.Fatalf("Stream returned early: %v", err)
			}
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) || err != ctx.Err() {
					t.Errorf("Stream = %v, want ctx.Err() (%v)", err, ctx.Err())
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("Stream took %v to return after cancel", d)
				}
			case <-time.After(testTimeout):
				t.Fatal("Stream did not return after cancel")
			}
			if n := len(ts.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestContextDeadline(t *testing.T) {
	t.Parallel()
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Stream(ctx, func(event.Message) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stream = %v, want %v", err, context.DeadlineExceeded)
	}
}

func TestNoURL(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	if err := c.Stream(testContext(t), func(event.Message) error { return nil }); err == nil {
		t.Error("Stream with no URL returned nil")
	}
}

func TestIdleTimeoutReconnects(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		if n == 1 {
			send(w, "id: 1\ndata: a\n\n")
		} else {
			send(w, "data: b\n\n")
		}
		ts.hold(r) // then silence
	})
	c := newClient(t, ts.URL)
	c.IdleTimeout = idle
	var rec recorder
	rec.attach(c)

	start := time.Now()
	got, err := collect(t, c, 2)
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []msg{{"1", "message", "a"}, {"1", "message", "b"}}; !slices.Equal(view(got), want) {
		t.Errorf("events = %q, want %q", view(got), want)
	}
	reqs := ts.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < idle {
		t.Errorf("reconnected after %v, want at least the %v idle timeout", gap, idle)
	}
	if d := time.Since(start); d > testTimeout {
		t.Errorf("took %v", d)
	}
	if got, want := lastEventIDs(reqs), []string{"-", "1"}; !slices.Equal(got, want) {
		t.Errorf("Last-Event-ID per request = %q, want %q", got, want)
	}
	reasons := rec.reasons()
	if len(reasons) != 1 || reasons[0] == nil || errors.Is(reasons[0], ErrClosed) {
		t.Errorf("OnDisconnect reasons = %v, want one idle error", reasons)
	}
	if got, want := rec.urls(), []string{ts.URL, ts.URL}; !slices.Equal(got, want) {
		t.Errorf("OnConnect URLs = %q, want %q", got, want)
	}
	if n := c.Connects(); n != 2 {
		t.Errorf("Connects() = %d, want 2", n)
	}
}

func TestIdleTimeoutKeptAliveByHeartbeats(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		// Twice the idle timeout of comments, each well within it.
		for range 12 {
			select {
			case <-time.After(idle / 6):
			case <-r.Context().Done():
				return
			}
			send(w, ": ping\n\n")
		}
		send(w, "data: done\n\n")
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	c.IdleTimeout = idle
	var rec recorder
	rec.attach(c)

	if _, err := collect(t, c, 1); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if n := len(ts.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	if got := rec.reasons(); len(got) != 0 {
		t.Errorf("OnDisconnect reasons = %v, want none", got)
	}
}

// Regression: the idle timer once started only when the response headers arrived, so a
// server that accepts the request and never answers hangs Stream forever,
// although the connection "receives nothing" for longer than IdleTimeout.
func TestIdleTimeoutCoversTheAnswer(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			ts.hold(r) // accept, answer nothing
			return
		}
		startStream(w)
		send(w, "data: ok\n\n")
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	c.IdleTimeout = idle
	if _, err := collect(t, c, 1); err != nil {
		t.Fatalf("Stream: %v (want a reconnect after the %v idle timeout)", err, idle)
	}
	if n := len(ts.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// Regression: the idle timer once ran while the callback ran, so a callback slower
// than IdleTimeout drops a connection on which the server keeps sending.
func TestIdleTimeoutExcludesCallbackTime(t *testing.T) {
	t.Parallel()
	const idle = 100 * time.Millisecond
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		for i := 1; ; i++ {
			send(w, fmt.Sprintf("id: %d\ndata: %d\n\n", i, i))
			select {
			case <-time.After(idle / 5):
			case <-r.Context().Done():
				return
			case <-ts.quit:
				return
			}
		}
	})
	c := newClient(t, ts.URL)
	c.IdleTimeout = idle
	var rec recorder
	rec.attach(c)
	n := 0
	err := c.Stream(testContext(t), func(event.Message) error {
		n++
		time.Sleep(2 * idle) // a slow consumer; the server keeps sending
		if n == 3 {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if got := rec.reasons(); len(got) != 0 {
		t.Errorf("OnDisconnect reasons = %v, want none: the server never went idle", got)
	}
	if n := c.Connects(); n != 1 {
		t.Errorf("Connects() = %d, want 1", n)
	}
}

func TestLastEventIDWhileStreaming(t *testing.T) {
	t.Parallel()
	const total = 300
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		startStream(w)
		for i := 1; i <= total; i++ {
			send(w, fmt.Sprintf("id: %d\ndata: %d\n\n", i, i))
		}
		ts.hold(r)
	})
	c := newClient(t, ts.URL)

	stop := make(chan struct{})
	polled := make(chan error, 1)
	go func() {
		prev, reads := 0, 0
		for {
			select {
			case <-stop:
				if reads == 0 {
					polled <- errors.New("never polled")
					return
				}
				polled <- nil
				return
			default:
			}
			reads++
			_ = c.Connects()
			s := c.LastEventID()
			if s == "" {
				continue
			}
			v, err := strconv.Atoi(s)
			if err != nil || v < prev || v > total {
				polled <- fmt.Errorf("LastEventID() = %q after %d", s, prev)
				return
			}
			prev = v
		}
	}()

	got, err := collect(t, c, total)
	close(stop)
	if perr := <-polled; perr != nil {
		t.Error(perr)
	}
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	for i, m := range got {
		if want := strconv.Itoa(i + 1); m.ID != want || string(m.Data) != want {
			t.Fatalf("event %d = %+v, want id and data %s", i, m, want)
		}
	}
	if id := c.LastEventID(); id != strconv.Itoa(total) {
		t.Errorf("LastEventID() = %q, want %d", id, total)
	}
}

func TestMaxEventSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		big  string
	}{
		{name: "one long line", big: "data: " + strings.Repeat("x", 200) + "\n\n"},
		{name: "many short lines", big: strings.Repeat("data: xxxxxxxxxx\n", 20) + "\n"},
		{name: "line longer than the read buffer", big: "data: " + strings.Repeat("x", 20000) + "\n\n"},
		{name: "unterminated line longer than the read buffer", big: "data: " + strings.Repeat("x", 20000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts *testServer
			ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				startStream(w)
				if n == 1 {
					send(w, "retry: 10\nid: 1\ndata: ok\n\n")
					send(w, tt.big)
					send(w, "id: 2\ndata: after\n\n")
				} else {
					send(w, "data: resumed\n\n")
				}
				ts.hold(r)
			})
			c := newClient(t, ts.URL)
			c.MaxEventSize = 64
			var rec recorder
			rec.attach(c)

			got, err := collect(t, c, 2)
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			if want := []msg{{"1", "message", "ok"}, {"1", "message", "resumed"}}; !slices.Equal(view(got), want) {
				t.Errorf("events = %q, want %q", view(got), want)
			}
			reasons := rec.reasons()
			if len(reasons) != 1 || !errors.Is(reasons[0], event.ErrEventTooLarge) {
				t.Errorf("OnDisconnect reasons = %v, want [%v]", reasons, event.ErrEventTooLarge)
			}
			if got, want := lastEventIDs(ts.requests()), []string{"-", "1"}; !slices.Equal(got, want) {
				t.Errorf("Last-Event-ID per request = %q, want %q", got, want)
			}
		})
	}
}

// Regression: MIME types are case-insensitive and browsers compare the
// parsed essence, but the client matches a case-sensitive prefix.
func TestContentTypeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	var ts *testServer
	ts = newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "Text/Event-Stream; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		send(w, "data: ok\n\n")
		ts.hold(r)
	})
	c := newClient(t, ts.URL)
	if _, err := collect(t, c, 1); err != nil {
		t.Fatalf("Stream: %v", err)
	}
}
