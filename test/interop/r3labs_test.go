package interop

import (
	"bufio"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"github.com/ssegate/ssegate/test/redistest"
)

// r3 is one r3labs client: subscribe runs one SubscribeRawWithContext in
// the background, whose return value arrives on done.
type r3 struct {
	t      *testing.T
	client *sse.Client
	rec    *recorder
	ctx    context.Context
	done   chan error
}

func newR3(t *testing.T, url string, strategy backoff.BackOff) *r3 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := sse.NewClient(url)
	c.ReconnectStrategy = strategy
	r := &r3{t: t, client: c, rec: newRecorder(), ctx: ctx, done: make(chan error, 1)}
	t.Cleanup(cancel)
	return r
}

func (r *r3) subscribe() {
	go func() {
		r.done <- r.client.SubscribeRawWithContext(r.ctx, func(m *sse.Event) { r.rec.add(string(m.Event), string(m.Data)) })
	}()
}

// ended returns what the subscription returned if it returned within d.
func (r *r3) ended(d time.Duration) (error, bool) {
	select {
	case err := <-r.done:
		return err, true
	case <-time.After(d):
		return nil, false
	}
}

func fastBackoff() backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 200 * time.Millisecond
	b.MaxElapsedTime = 10 * time.Second
	return b
}

func TestR3labs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("full job", func(t *testing.T) {
		id := e.newJob()
		c := newR3(t, e.streamURL(id, ""), fastBackoff())
		c.subscribe()
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "progress 1", "progress 2", "progress 3", "complete")
		c.rec.waitLen(t, len(wantFull))
		// The gateway ends the response after the terminal event: r3labs
		// takes a clean end as the end of the subscription.
		err, ok := c.ended(5 * time.Second)
		if !ok || err != nil {
			t.Fatalf("subscription ended %v with %v, want it to end with nil", ok, err)
		}
		if got := c.rec.got(); !equal(got, wantFull) {
			t.Fatalf("got %q, want %q", got, wantFull)
		}
	})

	t.Run("resume across restart", func(t *testing.T) {
		// Documented behaviour: a graceful restart ends the response
		// cleanly, and r3labs ends the subscription (returns nil) instead
		// of reconnecting. The application must subscribe again with the
		// same Client, which keeps LastEventID and sends it as
		// Last-Event-ID: then the resume is exact. And at the stop r3labs
		// hands the application an empty message: the gateway's last,
		// unterminated lines (retry:, id:), which a WHATWG parser discards
		// at the end of the stream, r3labs dispatches.
		id := e.newJob()
		c := newR3(t, e.streamURL(id, ""), fastBackoff())
		c.subscribe()
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "progress 1")
		c.rec.waitLen(t, 3)
		e.gw.Stop()
		err, ok := c.ended(5 * time.Second)
		if !ok || err != nil {
			t.Fatalf("at the gateway's graceful stop the subscription ended %v with %v; the README says it ends with nil", ok, err)
		}
		e.must(id, "progress 2")
		e.gw.Restart()
		e.must(id, "progress 3")
		time.Sleep(200 * time.Millisecond)
		empty := key("", "")
		if got, want := c.rec.got(), append(wantFull[:3:3], empty); !equal(got, want) {
			t.Fatalf("at the graceful stop got %q, want %q (the README documents the empty message)", got, want)
		}
		c.subscribe() // the application's resubscribe
		e.must(id, "complete")
		c.rec.waitLen(t, len(wantFull)+1)
		if _, ok := c.ended(5 * time.Second); !ok {
			t.Fatal("the second subscription did not end after complete")
		}
		want := append(append(wantFull[:3:3], empty), wantFull[3:]...)
		if got := c.rec.got(); !equal(got, want) {
			t.Fatalf("got %q, want %q (each once, none lost)", got, want)
		}
	})

	t.Run("failed job vs connection error", func(t *testing.T) {
		id := e.newJob()
		c := newR3(t, e.streamURL(id, ""), fastBackoff())
		c.subscribe()
		c.rec.waitLen(t, 1)
		e.must(id, "processing", "fail")
		c.rec.waitLen(t, len(wantFailed))
		if got := c.rec.got(); !equal(got, wantFailed) {
			t.Fatalf("got %q, want %q", got, wantFailed)
		}
		// A connection error is the subscription's error (after the
		// reconnect strategy gives up), never an event.
		port, _ := redistest.FreePort()
		bad := newR3(t, "http://127.0.0.1:"+itoa(port)+"/api/reports/"+id+"/stream", &backoff.StopBackOff{})
		bad.subscribe()
		err, ok := bad.ended(5 * time.Second)
		if !ok || err == nil {
			t.Fatalf("refused connection: subscription ended %v with %v, want an error", ok, err)
		}
		if got := bad.rec.got(); len(got) != 0 {
			t.Fatalf("a connection error reached the handler: %q", got)
		}
	})

	t.Run("after the terminal event", func(t *testing.T) {
		// r3labs makes no request after the terminal event: the clean end
		// ends the subscription. Subscribing again (as an application that
		// resubscribes on every end would) gets the 204, which r3labs
		// retries with its backoff until the strategy gives up.
		id := e.newJob()
		e.must(id, "complete")
		c := newR3(t, e.streamURL(id, ""), fastBackoff())
		c.subscribe()
		c.rec.waitLen(t, 1)
		err, ok := c.ended(5 * time.Second)
		if !ok || err != nil {
			t.Fatalf("subscription ended %v with %v, want nil", ok, err)
		}
		time.Sleep(300 * time.Millisecond)
		if got, want := ints(e.requests(id)...), ints(200); got != want {
			t.Fatalf("stream requests %s, want %s", got, want)
		}
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = 50 * time.Millisecond
		b.MaxInterval = 50 * time.Millisecond
		b.MaxElapsedTime = 400 * time.Millisecond
		c.client.ReconnectStrategy = b
		c.subscribe()
		err, ok = c.ended(5 * time.Second)
		if !ok || err == nil {
			t.Fatalf("resubscribe after complete ended %v with %v, want the 204 error", ok, err)
		}
		reqs := e.requests(id)
		if len(reqs) < 3 || reqs[1] != 204 || reqs[len(reqs)-1] != 204 {
			t.Fatalf("stream requests %v, want 200 then 204 retried", reqs)
		}
		t.Logf("resubscribe after complete: %d requests answered 204 in 400 ms, then %v", len(reqs)-1, err)
		if got := c.rec.got(); !equal(got, []string{"complete"}) {
			t.Fatalf("events %q, want the complete event once", got)
		}
	})

	t.Run("report near the inline limit", func(t *testing.T) {
		id := e.newJob()
		c := newR3(t, e.streamURL(id, "includeReport=true"), fastBackoff())
		c.subscribe()
		c.rec.waitLen(t, 1)
		e.must(id, "report")
		c.rec.waitLen(t, len(wantReport))
		if got := c.rec.got(); !equal(got, wantReport) {
			t.Fatalf("got %q, want %q", got, wantReport)
		}
	})
	t.Run("report over 64 KiB", func(t *testing.T) {
		// Documented behaviour: a complete event over r3labs' default
		// 64 KiB buffer fails the read (bufio.ErrTooLong), which r3labs
		// retries with its backoff and Last-Event-ID of the event before:
		// the same complete again, until the backoff gives up (15 min by
		// default). The complete never reaches the handler.
		big := e.defaultLimit()
		id := big.newJob()
		var mu sync.Mutex
		var errs []error
		c := newR3(t, big.streamURL(id, "includeReport=true"), fastBackoff())
		c.client.ReconnectNotify = func(err error, _ time.Duration) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		c.subscribe()
		c.rec.waitLen(t, 1)
		big.must(id, "bigreport")
		if !waitFor(5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(errs) >= 3 }) {
			t.Fatalf("r3labs retried %d times in 5 s, want it to loop on the complete event", len(errs))
		}
		mu.Lock()
		last := errs[len(errs)-1]
		mu.Unlock()
		if !errors.Is(last, bufio.ErrTooLong) {
			t.Fatalf("retry error %v, want bufio.ErrTooLong", last)
		}
		if _, ended := c.ended(0); ended {
			t.Fatal("the subscription ended; the README says it loops")
		}
		if got := c.rec.got(); !equal(got, wantBig[:1]) {
			t.Fatalf("events %q, want only %q", got, wantBig[:1])
		}
		if reqs := big.requests(id); len(reqs) < 3 {
			t.Fatalf("stream requests %v, want the complete fetched again and again", reqs)
		}
	})
}
