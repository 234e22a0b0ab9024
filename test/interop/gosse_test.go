package interop

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/ssegate/ssegate/test/redistest"
)

// goSSE runs one go-sse connection to url in the background; done yields
// what Connect returned.
type goSSE struct {
	rec    *recorder
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	retries []error // errors go-sse retried after (OnRetry)
}

func startGoSSE(t *testing.T, url string) *goSSE {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &goSSE{rec: newRecorder(), cancel: cancel, done: make(chan error, 1)}
	client := &sse.Client{
		HTTPClient: http.DefaultClient,
		Backoff:    sse.Backoff{InitialInterval: 50 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
		OnRetry: func(err error, _ time.Duration) {
			c.mu.Lock()
			c.retries = append(c.retries, err)
			c.mu.Unlock()
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := client.NewConnection(req)
	conn.SubscribeToAll(func(e sse.Event) { c.rec.add(e.Type, e.Data) })
	go func() { c.done <- conn.Connect() }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Error("go-sse: Connect did not return 5 s after its context was cancelled")
		}
	})
	return c
}

// ended returns what Connect returned if it returned within d.
func (c *goSSE) ended(d time.Duration) (error, bool) {
	select {
	case err := <-c.done:
		c.done <- err
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

func TestGoSSE(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("full job", func(t *testing.T) {
		id := e.newJob()
		c := startGoSSE(t, e.streamURL(id, ""))
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "progress 1", "progress 2", "progress 3", "complete")
		c.rec.waitLen(t, len(wantFull))
		time.Sleep(300 * time.Millisecond) // room for a duplicate
		if got := c.rec.got(); !equal(got, wantFull) {
			t.Fatalf("got %q, want %q", got, wantFull)
		}
	})

	t.Run("resume across restart", func(t *testing.T) {
		id := e.newJob()
		c := startGoSSE(t, e.streamURL(id, ""))
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "progress 1")
		c.rec.waitLen(t, 3)
		e.restart(id, "progress 2")
		e.must(id, "progress 3", "complete")
		c.rec.waitLen(t, len(wantFull))
		time.Sleep(300 * time.Millisecond)
		if got := c.rec.got(); !equal(got, wantFull) {
			t.Fatalf("got %q, want %q (each once, none lost)", got, wantFull)
		}
	})

	t.Run("failed job vs connection error", func(t *testing.T) {
		id := e.newJob()
		c := startGoSSE(t, e.streamURL(id, ""))
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "fail")
		c.rec.waitLen(t, len(wantFailed))
		if got := c.rec.got(); !equal(got, wantFailed) {
			t.Fatalf("got %q, want %q", got, wantFailed)
		}
		// A connection error never reaches the event callbacks: it is an
		// error given to OnRetry (and, when retrying ends, Connect's).
		port, _ := redistest.FreePort()
		bad := startGoSSE(t, "http://127.0.0.1:"+itoa(port)+"/api/reports/"+id+"/stream")
		if !waitFor(5*time.Second, func() bool { bad.mu.Lock(); defer bad.mu.Unlock(); return len(bad.retries) > 0 }) {
			t.Fatal("go-sse: no OnRetry error for a refused connection within 5 s")
		}
		var ce *sse.ConnectionError
		bad.mu.Lock()
		first := bad.retries[0]
		bad.mu.Unlock()
		if !errors.As(first, &ce) {
			t.Fatalf("the connection error is %T %v, not a *sse.ConnectionError", first, first)
		}
		if got := bad.rec.got(); len(got) != 0 {
			t.Fatalf("a connection error reached the event callbacks: %q", got)
		}
	})

	t.Run("after the terminal event", func(t *testing.T) {
		// go-sse reconnects when a response ends, with Last-Event-ID: the
		// gateway answers 204, which go-sse's default validator refuses as
		// permanent, so Connect returns and no more requests are made.
		id := e.newJob()
		e.must(id, "complete")
		c := startGoSSE(t, e.streamURL(id, ""))
		c.rec.waitLen(t, 1)
		err, ok := c.ended(5 * time.Second)
		if !ok {
			t.Fatalf("go-sse still connected 5 s after the complete event; requests %v", e.requests(id))
		}
		var ce *sse.ConnectionError
		if !errors.As(err, &ce) || ce.Reason != "response validation failed" {
			t.Fatalf("Connect returned %v, want a response validation error (the 204)", err)
		}
		time.Sleep(500 * time.Millisecond)
		if got, want := ints(e.requests(id)...), ints(200, 204); got != want {
			t.Fatalf("stream requests %s, want %s", got, want)
		}
		if got := c.rec.got(); !equal(got, []string{"complete"}) {
			t.Fatalf("events %q, want the complete event once", got)
		}
	})

	t.Run("report near the inline limit", func(t *testing.T) {
		id := e.newJob()
		c := startGoSSE(t, e.streamURL(id, "includeReport=true"))
		c.rec.waitLen(t, 1)
		e.must(id, "report")
		c.rec.waitLen(t, len(wantReport))
		if got := c.rec.got(); !equal(got, wantReport) {
			t.Fatalf("got %q, want %q", got, wantReport)
		}
	})
	t.Run("report over 64 KiB", func(t *testing.T) {
		// Documented behaviour: a complete event longer than go-sse's
		// default 64 KiB line limit fails the read (bufio.ErrTooLong), which
		// go-sse retries as a lost connection, with Last-Event-ID of the
		// event before: the same complete again, for ever.
		big := e.defaultLimit()
		id := big.newJob()
		c := startGoSSE(t, big.streamURL(id, "includeReport=true"))
		c.rec.waitLen(t, 1)
		big.must(id, "bigreport")
		if !waitFor(5*time.Second, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.retries) >= 3 }) {
			t.Fatalf("go-sse retried %d times in 5 s, want it to loop on the complete event", len(c.retries))
		}
		c.mu.Lock()
		last := c.retries[len(c.retries)-1]
		c.mu.Unlock()
		if !errors.Is(last, bufio.ErrTooLong) {
			t.Fatalf("retry error %v, want bufio.ErrTooLong", last)
		}
		if _, ended := c.ended(0); ended {
			t.Fatal("Connect returned; the README says it loops")
		}
		if got := c.rec.got(); !equal(got, wantBig[:1]) {
			t.Fatalf("events %q, want only %q", got, wantBig[:1])
		}
		if reqs := big.requests(id); len(reqs) < 3 {
			t.Fatalf("stream requests %v, want the complete fetched again and again", reqs)
		}
	})
}
