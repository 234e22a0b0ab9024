// Package sseclient is a Server-Sent Events client that behaves like a
// browser's EventSource: it reconnects after the server's retry hint, sends
// Last-Event-ID so the server can resume exactly, stops for good on 204 No
// Content, and treats other 4xx answers as fatal. It can rotate over several
// URLs, as a load balancer would spread reconnects over gateway instances.
//
// A Client runs one stream at a time; its Stream method is not safe for
// concurrent use, but LastEventID and Connects may be read while it runs.
package sseclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
)

// ErrStop, returned by a Stream callback, ends Stream with a nil error.
var ErrStop = errors.New("sseclient: stop")

// ErrNoContent is returned by Stream when the server answers 204: it has
// nothing more for this client (an EventSource stops reconnecting).
var ErrNoContent = errors.New("sseclient: server answered 204 No Content")

// StatusError is an answer other than 200 and 204. An EventSource gives up
// on all of them; a Client retries 5xx only with RetryServerErrors.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("sseclient: HTTP %d: %s", e.Code, strings.TrimSpace(e.Body))
}

// Client is a reconnecting SSE client.
type Client struct {
	// URLs are tried in turn, one per connection attempt. At least one.
	URLs []string
	// HTTPClient sends the requests. Default: a client with no timeout.
	HTTPClient *http.Client
	// Header is added to every request.
	Header http.Header
	// DefaultRetry is the reconnect delay until the server sends a retry
	// hint. Default 1s.
	DefaultRetry time.Duration
	// RetryServerErrors makes 5xx answers retried (an EventSource gives up
	// on them). Default false: like a browser.
	RetryServerErrors bool
	// IdleTimeout, when positive, drops a connection that receives nothing
	// (not even a heartbeat) for this long, and reconnects.
	IdleTimeout time.Duration
	// MaxEventSize bounds one event. Default event.DefaultMaxEventSize.
	MaxEventSize int
	// OnConnect, when set, is called after each 200 answer with the URL.
	OnConnect func(url string)
	// OnDisconnect, when set, is called when a connection ends with the
	// reason, before the reconnect delay.
	OnDisconnect func(err error)

	mu          sync.Mutex // guards lastEventID, retry
	lastEventID string
	retry       time.Duration
	connects    atomic.Int64
	next        int
}

// SetLastEventID sets the ID the next connection resumes from.
func (c *Client) SetLastEventID(id string) {
	c.mu.Lock()
	c.lastEventID = id
	c.mu.Unlock()
}

// LastEventID returns the ID the next connection would resume from.
func (c *Client) LastEventID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastEventID
}

// Connects returns how many connections got a 200 event-stream answer so far.
func (c *Client) Connects() int64 { return c.connects.Load() }

// Stream connects and calls fn with every event, reconnecting as an
// EventSource would, until fn returns an error (ErrStop: Stream returns
// nil; anything else: Stream returns it), ctx ends, or the server ends the
// stream for good (204: ErrNoContent; 4xx: *StatusError).
func (c *Client) Stream(ctx context.Context, fn func(event.Message) error) error {
	if len(c.URLs) == 0 {
		return errors.New("sseclient: no URL")
	}
	for {
		err := c.once(ctx, fn)
		var cbErr *callbackError
		var se *StatusError
		switch {
		case errors.As(err, &cbErr):
			if errors.Is(cbErr.err, ErrStop) {
				return nil
			}
			return cbErr.err
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrNoContent):
			return err
		case errors.As(err, &se) && (se.Code < 500 || !c.RetryServerErrors):
			return err
		}
		if c.OnDisconnect != nil {
			c.OnDisconnect(err)
		}
		t := time.NewTimer(c.delay())
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// delay is the reconnect delay: the server's latest retry hint, else
// DefaultRetry, else 1s.
func (c *Client) delay() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.retry > 0:
		return c.retry
	case c.DefaultRetry > 0:
		return c.DefaultRetry
	}
	return time.Second
}

// callbackError carries an error returned by the Stream callback.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return "sseclient: callback: " + e.err.Error() }

// ErrClosed is the disconnect reason when the server ended the response
// (an unfinished event at the end is discarded, as a browser does).
var ErrClosed = errors.New("sseclient: server closed the stream")

// ErrIdle is the disconnect reason when a connection received nothing for
// IdleTimeout.
var ErrIdle = errors.New("sseclient: connection idle for too long")

func (c *Client) once(ctx context.Context, fn func(event.Message) error) (err error) {
	url := c.URLs[c.next%len(c.URLs)]
	c.next++
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The idle timer runs from the request on (a server that never answers
	// is idle too) and is paused while the callback runs.
	var idle *time.Timer
	if c.IdleTimeout > 0 {
		idle = time.AfterFunc(c.IdleTimeout, func() { cancel(ErrIdle) })
		defer idle.Stop()
		defer func() {
			if err != nil && errors.Is(context.Cause(ctx), ErrIdle) {
				err = ErrIdle
			}
		}()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, vs := range c.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if id := c.LastEventID(); id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); {
	case resp.StatusCode == http.StatusNoContent:
		return ErrNoContent
	case resp.StatusCode != http.StatusOK:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &StatusError{Code: resp.StatusCode, Body: string(body)}
	case mt != "text/event-stream":
		return &StatusError{Code: resp.StatusCode, Body: "Content-Type " + resp.Header.Get("Content-Type")}
	}
	c.connects.Add(1)
	if c.OnConnect != nil {
		c.OnConnect(url)
	}
	var body io.Reader = resp.Body
	if idle != nil {
		body = &idleReader{r: resp.Body, t: idle, d: c.IdleTimeout}
	}
	dec := event.NewDecoderSize(body, c.MaxEventSize)
	dec.SetLastEventID(c.LastEventID())
	for {
		m, err := dec.Next()
		c.mu.Lock()
		c.lastEventID = dec.LastEventID()
		if dec.Retry() > 0 {
			c.retry = dec.Retry()
		}
		c.mu.Unlock()
		if err == io.EOF {
			return ErrClosed
		}
		if err != nil {
			return err
		}
		if idle != nil {
			idle.Stop()
		}
		if err := fn(m); err != nil {
			return &callbackError{err}
		}
		if idle != nil {
			idle.Reset(c.IdleTimeout)
		}
	}
}

// idleReader pushes the idle timer back on every read that returns data.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.d)
	}
	return n, err
}
