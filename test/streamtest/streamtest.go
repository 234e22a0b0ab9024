// Package streamtest has the SSE test clients and checks shared by the
// gateway's tests and the process-level tests: a background client that
// reads a job's stream until its terminal event (reconnecting like an
// EventSource, over several gateway addresses), and the check that a client
// saw every event of its job exactly once, in order.
package streamtest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/sseclient"
)

// Wait bounds every wait in these helpers: far above what any step needs,
// so a slow shared machine never fails a test, while a hang still does.
const Wait = 30 * time.Second

// Stream is one SSE client run in the background until its job's terminal
// event.
type Stream struct {
	Client *sseclient.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []event.Message // heartbeats excluded
	beats  int
	err    error
}

// Open starts a client of urls (tried in turn on each reconnect), resuming
// from lastEventID if it is not empty. configure may adjust the client.
func Open(tb testing.TB, urls []string, lastEventID string, configure ...func(*sseclient.Client)) *Stream {
	tb.Helper()
	tr := &http.Transport{}
	tb.Cleanup(tr.CloseIdleConnections)
	c := &sseclient.Client{URLs: urls, HTTPClient: &http.Client{Transport: tr}, DefaultRetry: 50 * time.Millisecond}
	c.SetLastEventID(lastEventID)
	for _, f := range configure {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stream{Client: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		err := c.Stream(ctx, func(m event.Message) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if m.Event == string(event.TypeHeartbeat) {
				s.beats++
				return nil
			}
			s.events = append(s.events, m)
			if event.Type(m.Event).Terminal() {
				return sseclient.ErrStop
			}
			return nil
		})
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	tb.Cleanup(s.Close)
	return s
}

// Events returns a copy of the events received so far (no heartbeats).
func (s *Stream) Events() []event.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Message(nil), s.events...)
}

// Heartbeats returns how many heartbeats were received.
func (s *Stream) Heartbeats() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.beats
}

// WaitDone waits until the client stopped by itself (terminal event or a
// fatal answer) and returns its error.
func (s *Stream) WaitDone(tb testing.TB) error {
	tb.Helper()
	select {
	case <-s.done:
	case <-time.After(Wait):
		tb.Fatalf("stream did not end; has %d events", len(s.Events()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// WaitEvents waits until the client has at least n events and returns them.
func (s *Stream) WaitEvents(tb testing.TB, n int) []event.Message {
	tb.Helper()
	Eventually(tb, fmt.Sprintf("%d events", n), func() bool { return len(s.Events()) >= n })
	return s.Events()
}

// Close stops the client, as a user closing the tab would. Idempotent.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

// AssertExactlyOnce checks that got holds exactly the entries of want, in
// order, by ID and type, and by data except for complete events (rebuilt
// for each client) and status events (a snapshot's status has its own
// timestamp).
func AssertExactlyOnce(tb testing.TB, got []event.Message, want []redis.XMessage) {
	tb.Helper()
	var b strings.Builder
	ok := len(got) == len(want)
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i].ID + " " + got[i].Event
		}
		if i < len(want) {
			w = want[i].ID + " " + fmt.Sprint(want[i].Values["type"])
		}
		mark := " "
		if g != w || (i < len(got) && got[i].Event != "complete" && got[i].Event != "status" && string(got[i].Data) != want[i].Values["data"]) {
			ok, mark = false, "!"
		}
		fmt.Fprintf(&b, "%s %-40s | %s\n", mark, g, w)
	}
	if !ok {
		tb.Fatalf("events differ from the job's stream (got | want):\n%s", b.String())
	}
}

// Eventually polls cond until it holds, failing tb after Wait.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
