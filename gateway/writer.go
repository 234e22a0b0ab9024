package gateway

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// errReportUnavailable means a complete event's report could not be read:
// the stream ends without it so the client resumes and gets it.
var errReportUnavailable = errors.New("gateway: report unavailable")

// sink is the writing side of one stream: an http.ResponseWriter with its
// ResponseController, or a fake in tests.
type sink interface {
	io.Writer
	Flush() error
	SetWriteDeadline(time.Time) error
}

// writer writes one client's stream: the frames it has not written yet, with
// its write deadline, flushes and counters.
//
// Concurrency: none; it belongs to the goroutine that runs the stream (the
// handler, then one drain at a time).
type writer struct {
	out          sink
	writeTimeout time.Duration
	metrics      *metrics
	last         protocol.ID // newest event written; older frames are skipped
	sent         int         // events written
	err          error       // first write error; later writes are no-ops
	dirty        bool        // written since the last flush
	deadline     time.Time   // the write deadline set on out
	wrote        time.Time   // when the last batch began (heartbeats fill silences)
	// expiryRetry, when set, means the stream's end is its token's exp:
	// timedOut then tells the client to come back after about this long.
	expiryRetry time.Duration
}

func (w *writer) write(b []byte) {
	if w.err != nil {
		return
	}
	if !w.dirty {
		// A client that stops reading is cut once a write has waited
		// between writeTimeout/2 and writeTimeout, instead of holding this
		// goroutine. Moving the deadline costs a runtime timer update, so
		// it moves only when less than half of it is left.
		now := time.Now()
		if w.deadline.Sub(now) < w.writeTimeout/2 {
			w.deadline = now.Add(w.writeTimeout)
			_ = w.out.SetWriteDeadline(w.deadline)
		}
		w.wrote = now
		w.dirty = true
	}
	_, w.err = w.out.Write(b)
}

func (w *writer) flush() error {
	if w.err == nil && w.dirty {
		w.err = w.out.Flush()
		w.dirty = false
	}
	return w.err
}

// frame writes f unless the client has it already, and reports whether
// f ends the job.
func (w *writer) frame(f *frame, includeReport bool, replayed bool) (terminal bool, err error) {
	if !w.last.Less(f.id) {
		return false, nil
	}
	if len(f.ids) > 0 {
		return w.batch(f, replayed)
	}
	b, err := f.wireFor(includeReport)
	if err != nil {
		return false, errReportUnavailable
	}
	w.write(b)
	if w.err != nil {
		return false, w.err
	}
	w.last = f.id
	w.sent++
	w.metrics.sent(f.typ).Inc()
	if replayed {
		w.metrics.eventsReplayed.Inc()
	}
	if f.live {
		// Measured to the start of this write's batch (w.wrote), which
		// saves reading the clock for every delivery.
		w.metrics.latency.Observe(w.wrote.Sub(f.id.Time()).Seconds())
	}
	return f.typ.Terminal(), nil
}

// batch writes the events of a batch frame that the client does not have.
func (w *writer) batch(f *frame, replayed bool) (terminal bool, err error) {
	i := 0
	for i < len(f.ids) && !w.last.Less(f.ids[i]) {
		i++
	}
	w.write(f.wire[f.at[i]:])
	if w.err != nil {
		return false, w.err
	}
	for _, t := range f.types[i:] {
		w.metrics.sent(t).Inc()
	}
	n := len(f.ids) - i
	w.sent += n
	if replayed {
		w.metrics.eventsReplayed.Add(float64(n))
	}
	w.last = f.id
	return f.typ.Terminal(), nil
}

// raw writes bytes that are not a job event (snapshot parts, reset,
// heartbeat) and counts them as typ.
func (w *writer) raw(b []byte, typ event.Type) {
	w.write(b)
	if w.err == nil {
		w.sent++
		w.metrics.sent(typ).Inc()
	}
}

// loop runs a stream until it ends and returns why: the whole life of a
// stream for a caller that waits for it (a stream that stays with net/http).
// A nil clock is a clock of the stream's own.
func (w *writer) loop(ctx context.Context, c *client, clock *beatClock, heartbeatEvery, timeout time.Duration) string {
	done := make(chan string, 1)
	newStream(w, c, clock, heartbeatEvery, timeout, func(reason string) { done <- reason }).start(ctx)
	return <-done
}

// timedOut ends a stream that reached its end time: its timeout, after
// which the client reconnects as for any end, or its token's exp, which is
// told in a comment with a jittered retry hint, so the client comes back
// with a fresh token while the old one would be refused.
func (w *writer) timedOut() string {
	if w.expiryRetry <= 0 {
		return reasonTimeout
	}
	m := event.Message{Retry: jitter(w.expiryRetry), Comment: "token expired; reconnect with a fresh token"}
	if !w.last.IsZero() {
		m.ID = w.last.String()
	}
	if b, err := lines(m); err == nil {
		w.write(b)
		_ = w.flush()
	}
	return reasonTokenExpired
}

// kicked ends a stream the hub closed, telling the client when to come back.
func (w *writer) kicked(c *client) string {
	if c.kickRetry > 0 && c.kickReason != reasonSlow {
		m := event.Message{Retry: c.kickRetry, Comment: c.kickReason}
		if !w.last.IsZero() {
			m.ID = w.last.String()
		}
		if b, err := lines(m); err == nil {
			w.write(b)
			_ = w.flush()
		}
	}
	return c.kickReason
}

// failed maps a write error to a close reason. c is the hub's client of the
// stream, or nil for a stream the hub does not know.
func (w *writer) failed(c *client, err error) string {
	switch {
	case errors.Is(err, errReportUnavailable):
		w.metrics.redisErrors.WithLabelValues("report").Inc()
		return reasonRedis
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The hub may have ended this client already (cut it as slow, or
		// for shutdown): that reason stands, and is counted once.
		if c == nil || c.kick(reasonSlow, 0) {
			w.metrics.slowDisconnects.Inc()
			return reasonSlow
		}
		return c.kickReason
	}
	return reasonClientGone
}
