package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// testWriteTimeout is the writeTimeout of every writer under test.
const testWriteTimeout = 10 * time.Second

// recordingSink is a fake sink: it records what is written and flushed and
// fails on demand.
type recordingSink struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	writes    int
	flushes   int
	flushed   int         // len(buf) at the last flush
	deadlines []time.Time // every SetWriteDeadline
	writeErr  error       // returned by Write while set
	flushErr  error       // returned by Flush while set
	onWrite   func()      // called at the start of every Write, unlocked
}

var _ sink = (*recordingSink)(nil)

func (s *recordingSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	hook := s.onWrite
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.writeErr != nil {
		return 0, s.writeErr
	}
	return s.buf.Write(p)
}

func (s *recordingSink) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	if s.flushErr != nil {
		return s.flushErr
	}
	s.flushed = s.buf.Len()
	return nil
}

func (s *recordingSink) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadlines = append(s.deadlines, t)
	return nil
}

func (s *recordingSink) failWrites(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeErr = err
}

func (s *recordingSink) failFlushes(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushErr = err
}

// snapshot returns what was written, how many flushes were made and
// whether everything written was flushed.
func (s *recordingSink) snapshot() (written string, flushes int, allFlushed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String(), s.flushes, s.flushed == s.buf.Len()
}

func (s *recordingSink) deadlineList() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.deadlines...)
}

// newTestWriter returns a writer on a new recording sink with its own metrics.
func newTestWriter(tb testing.TB) (*writer, *recordingSink) {
	tb.Helper()
	s := &recordingSink{}
	return &writer{out: s, writeTimeout: testWriteTimeout, metrics: newMetrics(prometheus.NewRegistry())}, s
}

// testFrame encodes an event of type typ with ID id ("<ms>-<seq>").
func testFrame(tb testing.TB, id string, typ event.Type) *frame {
	tb.Helper()
	pid, err := protocol.ParseID(id)
	if err != nil {
		tb.Fatalf("test frame ID %q: %v", id, err)
	}
	data := fmt.Sprintf(`{"type":%q,"jobId":"job-1","n":%q}`, typ, id)
	wire, err := encode(pid, typ, []byte(data))
	if err != nil {
		tb.Fatalf("encode %s %s: %v", id, typ, err)
	}
	return &frame{id: pid, typ: typ, wire: wire}
}

// wires concatenates the wire bytes of frames.
func wires(frames ...*frame) string {
	var b strings.Builder
	for _, f := range frames {
		b.Write(f.wire)
	}
	return b.String()
}

// idLines returns the values of the id: lines of an SSE stream.
func idLines(stream string) []string {
	var ids []string
	for line := range strings.Lines(stream) {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, strings.TrimSuffix(v, "\n"))
		}
	}
	return ids
}

// runLoop starts w.loop in its own goroutine and returns the channel that
// receives its reason.
func runLoop(ctx context.Context, w *writer, c *client, heartbeatEvery, timeout time.Duration) <-chan string {
	done := make(chan string, 1)
	go func() { done <- w.loop(ctx, c, nil, heartbeatEvery, timeout) }()
	return done
}

// mustQueue queues frames on c without blocking and wakes its stream, as
// the hub does.
func mustQueue(tb testing.TB, c *client, frames ...*frame) {
	tb.Helper()
	for _, f := range frames {
		if !c.push(f) {
			tb.Fatalf("queue of %d is full", c.limit)
		}
	}
}

func sentCount(m *metrics, typ event.Type) float64 { return testutil.ToFloat64(m.sent(typ)) }

func TestWriterLoopHeartbeatsUntilTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		heartbeat  time.Duration
		timeout    time.Duration
		heartbeats int
	}{
		{name: "30s over 95s", heartbeat: 30 * time.Second, timeout: 95 * time.Second, heartbeats: 3},
		{name: "timeout before first", heartbeat: 30 * time.Second, timeout: 29 * time.Second, heartbeats: 0},
		{name: "10s over 95s", heartbeat: 10 * time.Second, timeout: 95 * time.Second, heartbeats: 9},
		{name: "1s over 1.5s", heartbeat: time.Second, timeout: 1500 * time.Millisecond, heartbeats: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				c := newClient(4, false)
				start := time.Now()
				reason := w.loop(t.Context(), c, nil, tt.heartbeat, tt.timeout)
				if reason != reasonTimeout {
					t.Errorf("reason = %q, want %q", reason, reasonTimeout)
				}
				if elapsed := time.Since(start); elapsed != tt.timeout {
					t.Errorf("loop ran %v, want exactly %v", elapsed, tt.timeout)
				}
				var want strings.Builder
				var wantDeadlines []time.Time
				for i := 1; i <= tt.heartbeats; i++ {
					at := start.Add(time.Duration(i) * tt.heartbeat)
					want.Write(heartbeat(at))
					wantDeadlines = append(wantDeadlines, at.Add(testWriteTimeout))
				}
				got, flushes, allFlushed := s.snapshot()
				if got != want.String() {
					t.Errorf("wrote\n%q\nwant\n%q", got, want.String())
				}
				if flushes != tt.heartbeats || !allFlushed {
					t.Errorf("flushes = %d (all flushed: %v), want %d", flushes, allFlushed, tt.heartbeats)
				}
				if d := s.deadlineList(); !equalTimes(d, wantDeadlines) {
					t.Errorf("write deadlines %v, want %v", d, wantDeadlines)
				}
				if n := sentCount(w.metrics, event.TypeHeartbeat); n != float64(tt.heartbeats) {
					t.Errorf("heartbeats counted = %v, want %d", n, tt.heartbeats)
				}
				if w.sent != tt.heartbeats || !w.last.IsZero() {
					t.Errorf("sent, last = %d, %v; want %d, zero (a heartbeat never moves the ID)", w.sent, w.last, tt.heartbeats)
				}
			})
		})
	}
}

// A heartbeat fills a silence: a stream that writes events more often than
// the heartbeat interval gets none, and the first heartbeat comes one
// interval after the last write.
func TestWriterLoopHeartbeatOnlyAfterSilence(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		c := newClient(4, false)
		start := time.Now()
		done := runLoop(t.Context(), w, c, 30*time.Second, 200*time.Second)
		for i, at := range []time.Duration{10, 35, 60} { // gaps of 25 s
			time.Sleep(at*time.Second - time.Since(start))
			mustQueue(t, c, testFrame(t, fmt.Sprintf("1-%d", i+1), event.TypeProgress))
		}
		if reason := <-done; reason != reasonTimeout {
			t.Fatalf("reason = %q", reason)
		}
		got, _, _ := s.snapshot()
		var beats []time.Duration
		for _, d := range s.deadlineList() {
			beats = append(beats, d.Sub(start)-testWriteTimeout)
		}
		if n := sentCount(w.metrics, event.TypeHeartbeat); n != 4 {
			t.Errorf("%v heartbeats, want 4 (at 90, 120, 150 and 180 s): %q", n, got)
		}
		if !strings.HasSuffix(got, string(heartbeat(start.Add(180*time.Second)))) {
			t.Errorf("last heartbeat not at 180 s: deadlines set at %v", beats)
		}
		if strings.Index(got, "heartbeat") < strings.LastIndex(got, "progress") {
			t.Errorf("a heartbeat went out between events: %q", got)
		}
	})
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestWriterLoopHeartbeatShape(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		c := newClient(4, false)
		w.last = protocol.ID{Ms: 42, Seq: 1} // an earlier event: still no id line
		ctx, cancel := context.WithCancel(t.Context())
		done := runLoop(ctx, w, c, 30*time.Second, time.Hour)

		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got, _, _ := s.snapshot(); got != "" {
			t.Fatalf("wrote %q before the first heartbeat", got)
		}
		time.Sleep(2 * time.Second) // 31s
		synctest.Wait()
		got, flushes, allFlushed := s.snapshot()
		if flushes != 1 || !allFlushed {
			t.Fatalf("flushes = %d (all flushed: %v), want 1", flushes, allFlushed)
		}
		if strings.Contains(got, "id:") {
			t.Errorf("heartbeat has an id line: %q", got)
		}
		lines := strings.Split(got, "\n")
		if len(lines) != 4 || lines[0] != "event: heartbeat" || lines[2] != "" || lines[3] != "" {
			t.Fatalf("heartbeat is not one event line, one data line and a blank line: %q", got)
		}
		data, ok := strings.CutPrefix(lines[1], "data: ")
		if !ok {
			t.Fatalf("no data line: %q", got)
		}
		var hb struct {
			Type      string `json:"type"`
			Timestamp string `json:"timestamp"`
		}
		dec := json.NewDecoder(strings.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&hb); err != nil {
			t.Fatalf("heartbeat data %q: %v", data, err)
		}
		want := time.Date(2000, 1, 1, 0, 0, 30, 0, time.UTC) // synctest's epoch + 30s
		if hb.Type != "heartbeat" || hb.Timestamp != want.Format(event.TimestampLayout) {
			t.Errorf("heartbeat data = %+v, want type heartbeat at %s", hb, want.Format(event.TimestampLayout))
		}
		cancel()
		if reason := <-done; reason != reasonClientGone {
			t.Errorf("reason = %q, want %q", reason, reasonClientGone)
		}
	})
}

func TestWriterLoopCoalescesBurst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		c := newClient(8, false)
		burst := []*frame{
			testFrame(t, "1-0", event.TypeStatus),
			testFrame(t, "1-1", event.TypeProgress),
			testFrame(t, "2-0", event.TypeProgress),
		}
		mustQueue(t, c, burst...)
		ctx, cancel := context.WithCancel(t.Context())
		done := runLoop(ctx, w, c, 30*time.Second, time.Hour)
		synctest.Wait()

		got, flushes, allFlushed := s.snapshot()
		if got != wires(burst...) {
			t.Fatalf("wrote\n%q\nwant\n%q", got, wires(burst...))
		}
		if flushes != 1 || !allFlushed {
			t.Errorf("burst of %d frames: %d flushes (all flushed: %v), want 1", len(burst), flushes, allFlushed)
		}
		if d := s.deadlineList(); len(d) != 1 {
			t.Errorf("burst set %d write deadlines, want 1", len(d))
		}

		// A later frame is its own batch.
		late := testFrame(t, "3-0", event.TypeProgress)
		mustQueue(t, c, late)
		synctest.Wait()
		got, flushes, allFlushed = s.snapshot()
		if want := wires(append(burst, late)...); got != want {
			t.Fatalf("wrote\n%q\nwant\n%q", got, want)
		}
		if flushes != 2 || !allFlushed {
			t.Errorf("flushes = %d (all flushed: %v), want 2", flushes, allFlushed)
		}

		cancel()
		if reason := <-done; reason != reasonClientGone {
			t.Errorf("reason = %q, want %q", reason, reasonClientGone)
		}
		if w.sent != 4 || w.last != late.id {
			t.Errorf("sent, last = %d, %v; want 4, %v", w.sent, w.last, late.id)
		}
		if n := sentCount(w.metrics, event.TypeStatus); n != 1 {
			t.Errorf("status events counted = %v, want 1", n)
		}
		if n := sentCount(w.metrics, event.TypeProgress); n != 3 {
			t.Errorf("progress events counted = %v, want 3", n)
		}
	})
}

func TestWriterLoopSkipsWrittenIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		last   string   // the writer's last ID before the loop; "" for none
		queued []string // IDs of progress frames queued, in order
		want   []string // IDs written, in order
	}{
		{name: "duplicate and older", queued: []string{"1-0", "2-0", "2-0", "1-5", "3-0"}, want: []string{"1-0", "2-0", "3-0"}},
		{name: "at or before resume point", last: "5-0", queued: []string{"4-9", "5-0", "5-1", "6-0"}, want: []string{"5-1", "6-0"}},
		{name: "same ms higher seq", last: "5-3", queued: []string{"5-2", "5-3", "5-4"}, want: []string{"5-4"}},
		{name: "all known", last: "9-0", queued: []string{"1-0", "9-0"}, want: nil},
		{name: "zero ID is never new", queued: []string{"0-0", "0-1"}, want: []string{"0-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				if tt.last != "" {
					id, err := protocol.ParseID(tt.last)
					if err != nil {
						t.Fatal(err)
					}
					w.last = id
				}
				c := newClient(len(tt.queued), false)
				byID := map[string]*frame{}
				for _, id := range tt.queued {
					f := testFrame(t, id, event.TypeProgress)
					mustQueue(t, c, f)
					byID[id] = f
				}
				var want []*frame
				for _, id := range tt.want {
					want = append(want, byID[id])
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := runLoop(ctx, w, c, time.Hour, 2*time.Hour)
				synctest.Wait()
				cancel()
				if reason := <-done; reason != reasonClientGone {
					t.Errorf("reason = %q, want %q", reason, reasonClientGone)
				}

				got, flushes, allFlushed := s.snapshot()
				if ids := idLines(got); strings.Join(ids, ",") != strings.Join(tt.want, ",") {
					t.Errorf("wrote IDs %v, want %v", ids, tt.want)
				}
				if got != wires(want...) {
					t.Errorf("wrote\n%q\nwant\n%q", got, wires(want...))
				}
				wantFlushes := 1
				if len(tt.want) == 0 {
					wantFlushes = 0 // nothing written, nothing to flush
				}
				if flushes != wantFlushes || !allFlushed {
					t.Errorf("flushes = %d (all flushed: %v), want %d", flushes, allFlushed, wantFlushes)
				}
				if w.sent != len(tt.want) {
					t.Errorf("sent = %d, want %d", w.sent, len(tt.want))
				}
				if n := sentCount(w.metrics, event.TypeProgress); n != float64(len(tt.want)) {
					t.Errorf("progress events counted = %v, want %d", n, len(tt.want))
				}
			})
		})
	}
}

func TestWriterLoopTerminalFrame(t *testing.T) {
	t.Parallel()
	for _, typ := range []event.Type{event.TypeComplete, event.TypeError} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				c := newClient(8, false)
				before := testFrame(t, "1-0", event.TypeProgress)
				terminal := testFrame(t, "2-0", typ)
				after := testFrame(t, "3-0", event.TypeProgress) // never published in practice; must not be sent
				mustQueue(t, c, before, terminal, after)
				start := time.Now()
				reason := w.loop(t.Context(), c, nil, 30*time.Second, time.Hour)
				if reason != reasonFinished {
					t.Errorf("reason = %q, want %q", reason, reasonFinished)
				}
				if time.Since(start) != 0 {
					t.Errorf("loop waited %v", time.Since(start))
				}
				got, flushes, allFlushed := s.snapshot()
				if want := wires(before, terminal); got != want {
					t.Errorf("wrote\n%q\nwant\n%q", got, want)
				}
				if flushes != 1 || !allFlushed {
					t.Errorf("flushes = %d (all flushed: %v), want 1 covering the terminal frame", flushes, allFlushed)
				}
				if n := sentCount(w.metrics, typ); n != 1 {
					t.Errorf("%s events counted = %v, want 1", typ, n)
				}
			})
		})
	}
}

func TestWriterLoopTerminalFlushFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		s.failFlushes(io.ErrClosedPipe)
		c := newClient(2, false)
		mustQueue(t, c, testFrame(t, "1-0", event.TypeComplete))
		if reason := w.loop(t.Context(), c, nil, 30*time.Second, time.Hour); reason != reasonClientGone {
			t.Errorf("reason = %q, want %q (the terminal frame never reached the client)", reason, reasonClientGone)
		}
	})
}

func TestWriterLoopContextDone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		before bool // cancel before the loop starts
	}{
		{name: "canceled while waiting"},
		{name: "canceled before start", before: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				c := newClient(2, false)
				ctx, cancel := context.WithCancel(t.Context())
				if tt.before {
					cancel()
				}
				done := runLoop(ctx, w, c, 30*time.Second, time.Hour)
				time.Sleep(10 * time.Second)
				cancel()
				if reason := <-done; reason != reasonClientGone {
					t.Errorf("reason = %q, want %q", reason, reasonClientGone)
				}
				if got, flushes, _ := s.snapshot(); got != "" || flushes != 0 {
					t.Errorf("wrote %q with %d flushes, want nothing", got, flushes)
				}
			})
		})
	}
}

func TestWriterLoopKicked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		reason    string
		retry     time.Duration
		written   string // ID of an event written before the kick; "" for none
		wantRetry string // the retry: line; "" for no output at all
	}{
		{name: "shutdown after an event", reason: reasonShutdown, retry: 1500 * time.Millisecond, written: "7-3", wantRetry: "retry: 1500"},
		{name: "shutdown before any event", reason: reasonShutdown, retry: 1500 * time.Millisecond, wantRetry: "retry: 1500"},
		{name: "resync", reason: reasonResync, retry: 2 * time.Second, written: "1-0", wantRetry: "retry: 2000"},
		{name: "slow", reason: reasonSlow, written: "7-3"},
		{name: "slow with a retry", reason: reasonSlow, retry: time.Second, written: "7-3"},
		{name: "no retry", reason: reasonShutdown, written: "7-3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				c := newClient(2, false)
				done := runLoop(t.Context(), w, c, 30*time.Second, time.Hour)
				var before string
				if tt.written != "" {
					f := testFrame(t, tt.written, event.TypeProgress)
					mustQueue(t, c, f)
					before = string(f.wire)
				}
				synctest.Wait()
				_, flushesBefore, _ := s.snapshot()
				if !c.kick(tt.reason, tt.retry) {
					t.Fatal("kick was not the first")
				}
				if reason := <-done; reason != tt.reason {
					t.Errorf("reason = %q, want %q", reason, tt.reason)
				}
				got, flushes, allFlushed := s.snapshot()
				rest, ok := strings.CutPrefix(got, before)
				if !ok {
					t.Fatalf("wrote %q, want it to start with the event %q", got, before)
				}
				if tt.wantRetry == "" {
					if rest != "" || flushes != flushesBefore {
						t.Errorf("kick %s wrote %q (%d flushes after), want nothing", tt.reason, rest, flushes-flushesBefore)
					}
					return
				}
				if flushes != flushesBefore+1 || !allFlushed {
					t.Errorf("kick flushed %d times (all flushed: %v), want once", flushes-flushesBefore, allFlushed)
				}
				// Field lines only: a blank line would end a block without
				// data, an empty message for some clients.
				if !strings.HasSuffix(rest, "\n") || strings.Contains(rest, "\n\n") {
					t.Errorf("kick output %q: want whole lines and no blank line", rest)
				}
				lines := strings.Split(strings.TrimSuffix(rest, "\n"), "\n")
				var retry, id []string
				for _, l := range lines {
					switch {
					case strings.HasPrefix(l, "retry:"):
						retry = append(retry, l)
					case strings.HasPrefix(l, "id:"):
						id = append(id, l)
					case strings.HasPrefix(l, ":"): // comment
					default:
						t.Errorf("kick output has an unexpected line %q (in %q)", l, rest)
					}
				}
				if len(retry) != 1 || retry[0] != tt.wantRetry {
					t.Errorf("retry lines %q, want [%q]", retry, tt.wantRetry)
				}
				switch {
				case tt.written == "" && len(id) != 0:
					t.Errorf("id lines %q with no event written, want none", id)
				case tt.written != "" && (len(id) != 1 || id[0] != "id: "+tt.written):
					t.Errorf("id lines %q, want [%q]", id, "id: "+tt.written)
				}
			})
		})
	}
}

func TestWriterLoopWriteErrors(t *testing.T) {
	t.Parallel()
	deadline := fmt.Errorf("write tcp 127.0.0.1:8080->127.0.0.1:5000: %w", os.ErrDeadlineExceeded)
	tests := []struct {
		name       string
		writeErr   error
		flushErr   error
		heartbeat  bool // fail on a heartbeat rather than on an event
		kickedSlow bool // the hub cuts the client as slow while the write is blocked
		want       string
		wantSlow   float64
	}{
		{name: "write deadline", writeErr: os.ErrDeadlineExceeded, want: reasonSlow, wantSlow: 1},
		{name: "wrapped write deadline", writeErr: deadline, want: reasonSlow, wantSlow: 1},
		{name: "flush deadline", flushErr: deadline, want: reasonSlow, wantSlow: 1},
		{name: "heartbeat deadline", writeErr: os.ErrDeadlineExceeded, heartbeat: true, want: reasonSlow, wantSlow: 1},
		{name: "deadline after the hub cut it as slow", writeErr: os.ErrDeadlineExceeded, kickedSlow: true, want: reasonSlow, wantSlow: 1},
		{name: "closed pipe", writeErr: io.ErrClosedPipe, want: reasonClientGone},
		{name: "connection reset", writeErr: syscall.ECONNRESET, want: reasonClientGone},
		{name: "flush closed pipe", flushErr: io.ErrClosedPipe, want: reasonClientGone},
		{name: "heartbeat closed pipe", writeErr: io.ErrClosedPipe, heartbeat: true, want: reasonClientGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				w, s := newTestWriter(t)
				c := newClient(2, false)
				s.failWrites(tt.writeErr)
				s.failFlushes(tt.flushErr)
				if tt.kickedSlow {
					// What the hub does when the queue overflows (sendLocked).
					s.onWrite = func() {
						if c.kick(reasonSlow, 0) {
							w.metrics.slowDisconnects.Inc()
						}
					}
				}
				if !tt.heartbeat {
					mustQueue(t, c, testFrame(t, "1-0", event.TypeProgress))
				}
				start := time.Now()
				reason := w.loop(t.Context(), c, nil, 30*time.Second, time.Hour)
				if reason != tt.want {
					t.Errorf("reason = %q, want %q", reason, tt.want)
				}
				wantAt := time.Duration(0)
				if tt.heartbeat {
					wantAt = 30 * time.Second
				}
				if time.Since(start) != wantAt {
					t.Errorf("ended after %v, want %v", time.Since(start), wantAt)
				}
				if n := testutil.ToFloat64(w.metrics.slowDisconnects); n != tt.wantSlow {
					t.Errorf("slow disconnects = %v, want %v", n, tt.wantSlow)
				}
				if tt.want == reasonSlow {
					if !c.gone.Load() {
						t.Error("a slow client is not marked kicked, so the hub may count it again")
					} else if c.kickReason != reasonSlow {
						t.Errorf("client kicked as %q, want %q", c.kickReason, reasonSlow)
					}
				}
				if w.err == nil {
					t.Error("writer forgot its error")
				}
				// Everything after a failed write is a no-op.
				writes := s.writes
				w.raw(heartbeat(time.Now()), event.TypeHeartbeat)
				if err := w.flush(); err == nil {
					t.Error("flush after a failure succeeded")
				}
				if s.writes != writes {
					t.Error("wrote to the sink after a failed write")
				}
			})
		})
	}
}

func TestWriterFailed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		err         error
		client      string // "none" (nil), "fresh", "kicked slow", "kicked shutdown"
		want        string
		wantSlow    float64
		wantReports float64
	}{
		{name: "deadline, unknown stream", err: os.ErrDeadlineExceeded, client: "none", want: reasonSlow, wantSlow: 1},
		{name: "deadline", err: os.ErrDeadlineExceeded, client: "fresh", want: reasonSlow, wantSlow: 1},
		{name: "deadline, already slow", err: os.ErrDeadlineExceeded, client: "kicked slow", want: reasonSlow, wantSlow: 0},
		{name: "deadline, already shut down", err: os.ErrDeadlineExceeded, client: "kicked shutdown", want: reasonShutdown, wantSlow: 0},
		{name: "report unavailable", err: errReportUnavailable, client: "fresh", want: reasonRedis, wantReports: 1},
		{name: "wrapped report unavailable", err: fmt.Errorf("replay: %w", errReportUnavailable), client: "none", want: reasonRedis, wantReports: 1},
		{name: "closed pipe", err: io.ErrClosedPipe, client: "fresh", want: reasonClientGone},
		{name: "EOF", err: io.EOF, client: "none", want: reasonClientGone},
		{name: "other", err: errors.New("boom"), client: "fresh", want: reasonClientGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, _ := newTestWriter(t)
			var c *client
			switch tt.client {
			case "fresh":
				c = newClient(1, false)
			case "kicked slow":
				c = newClient(1, false)
				c.kick(reasonSlow, 0)
			case "kicked shutdown":
				c = newClient(1, false)
				c.kick(reasonShutdown, time.Second)
			}
			if got := w.failed(c, tt.err); got != tt.want {
				t.Errorf("failed(%v) = %q, want %q", tt.err, got, tt.want)
			}
			if n := testutil.ToFloat64(w.metrics.slowDisconnects); n != tt.wantSlow {
				t.Errorf("slow disconnects = %v, want %v", n, tt.wantSlow)
			}
			if n := testutil.ToFloat64(w.metrics.redisErrors.WithLabelValues("report")); n != tt.wantReports {
				t.Errorf("report errors = %v, want %v", n, tt.wantReports)
			}
			if c == nil || tt.want != reasonSlow {
				return
			}
			// One client is counted once, however often its writes time out.
			if got := w.failed(c, tt.err); got != reasonSlow {
				t.Errorf("second failed(%v) = %q, want %q", tt.err, got, reasonSlow)
			}
			if n := testutil.ToFloat64(w.metrics.slowDisconnects); n != tt.wantSlow {
				t.Errorf("after a second timeout: slow disconnects = %v, want %v", n, tt.wantSlow)
			}
		})
	}
}

func TestWriterFrame(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)

		f := testFrame(t, "1-0", event.TypeProgress)
		terminal, err := w.frame(f, false, true)
		if terminal || err != nil {
			t.Fatalf("frame(progress) = %v, %v; want false, nil", terminal, err)
		}
		if n := testutil.ToFloat64(w.metrics.eventsReplayed); n != 1 {
			t.Errorf("replayed = %v, want 1", n)
		}

		// A live frame's age is its delivery latency.
		live := testFrame(t, uint64ID(uint64(time.Now().Add(-250*time.Millisecond).UnixMilli())), event.TypeStatus)
		live.live = true
		if _, err := w.frame(live, false, false); err != nil {
			t.Fatal(err)
		}
		var m dto.Metric
		if err := w.metrics.latency.Write(&m); err != nil {
			t.Fatal(err)
		}
		if h := m.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 0.25 {
			t.Errorf("latency samples = %d, sum %v; want 1, 0.25", h.GetSampleCount(), h.GetSampleSum())
		}

		// Skipped: not newer than the last written frame.
		if terminal, err := w.frame(testFrame(t, "1-0", event.TypeComplete), false, true); terminal || err != nil {
			t.Errorf("frame(older complete) = %v, %v; want false, nil", terminal, err)
		}
		if n := testutil.ToFloat64(w.metrics.eventsReplayed); n != 1 {
			t.Errorf("a skipped frame was counted as replayed: %v", n)
		}

		done := testFrame(t, uint64ID(live.id.Ms+1), event.TypeComplete)
		if terminal, err := w.frame(done, false, false); !terminal || err != nil {
			t.Errorf("frame(complete) = %v, %v; want true, nil", terminal, err)
		}
		if w.sent != 3 || w.last != done.id {
			t.Errorf("sent, last = %d, %v; want 3, %v", w.sent, w.last, done.id)
		}
		if got, flushes, _ := s.snapshot(); got != wires(f, live, done) || flushes != 0 {
			t.Errorf("wrote %q with %d flushes, want the three frames unflushed", got, flushes)
		}
	})
}

func uint64ID(ms uint64) string { return protocol.ID{Ms: ms}.String() }

func TestFrameWireFor(t *testing.T) {
	t.Parallel()
	report := []byte("id: 2-0\nevent: complete\ndata: {\"type\":\"complete\",\"report\":{}}\n\n")
	loadErr := errors.New("redis down")
	tests := []struct {
		name          string
		includeReport bool
		load          func() ([]byte, error) // nil: no report variant
		wantWire      string                 // "" with wantErr
		wantErr       bool
	}{
		{name: "without report asked", includeReport: false, load: func() ([]byte, error) { return report, nil }},
		{name: "asked, no report", includeReport: true},
		{name: "asked", includeReport: true, load: func() ([]byte, error) { return report, nil }, wantWire: string(report)},
		{name: "asked, load fails", includeReport: true, load: func() ([]byte, error) { return nil, loadErr }, wantErr: true},
		{name: "not asked, load would fail", includeReport: false, load: func() ([]byte, error) { return nil, loadErr }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := testFrame(t, "2-0", event.TypeComplete)
			if tt.wantWire == "" && !tt.wantErr {
				tt.wantWire = string(f.wire)
			}
			var loads atomic.Int32
			if tt.load != nil {
				f.withReport = &reportVariant{load: func() ([]byte, error) {
					loads.Add(1)
					return tt.load()
				}}
			}

			// wireFor, many times and at once: one load.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					got, err := f.wireFor(tt.includeReport)
					if tt.wantErr {
						if !errors.Is(err, loadErr) || got != nil {
							t.Errorf("wireFor = %q, %v; want nil, %v", got, err, loadErr)
						}
						return
					}
					if err != nil || string(got) != tt.wantWire {
						t.Errorf("wireFor = %q, %v; want %q", got, err, tt.wantWire)
					}
				})
			}
			wg.Wait()
			wantLoads := int32(0)
			if tt.includeReport && tt.load != nil {
				wantLoads = 1
			}
			if n := loads.Load(); n != wantLoads {
				t.Errorf("report loaded %d times, want %d", n, wantLoads)
			}

			// writer.frame writes the same bytes, or nothing.
			w, s := newTestWriter(t)
			terminal, err := w.frame(f, tt.includeReport, false)
			got, _, _ := s.snapshot()
			if tt.wantErr {
				if !errors.Is(err, errReportUnavailable) || terminal {
					t.Errorf("frame = %v, %v; want false, %v", terminal, err, errReportUnavailable)
				}
				if got != "" || w.sent != 0 || !w.last.IsZero() {
					t.Errorf("after a failed report: wrote %q, sent %d, last %v; want nothing", got, w.sent, w.last)
				}
				return
			}
			if err != nil || !terminal || got != tt.wantWire {
				t.Errorf("frame = %v, %v, wrote %q; want true, nil, %q", terminal, err, got, tt.wantWire)
			}
		})
	}
}

func TestWriterLoopReportUnavailable(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		c := newClient(2, true)
		before := testFrame(t, "1-0", event.TypeProgress)
		done := testFrame(t, "2-0", event.TypeComplete)
		done.withReport = &reportVariant{load: func() ([]byte, error) { return nil, errors.New("redis down") }}
		mustQueue(t, c, before, done)
		if reason := w.loop(t.Context(), c, nil, 30*time.Second, time.Hour); reason != reasonRedis {
			t.Errorf("reason = %q, want %q", reason, reasonRedis)
		}
		if n := testutil.ToFloat64(w.metrics.redisErrors.WithLabelValues("report")); n != 1 {
			t.Errorf("report errors = %v, want 1", n)
		}
		if got, _, _ := s.snapshot(); got != wires(before) {
			t.Errorf("wrote %q, want only the event before the complete one", got)
		}
		if w.last != before.id {
			t.Errorf("last = %v, want %v: the client must resume before the complete event", w.last, before.id)
		}
	})
}

func TestWriterWriteAndFlush(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, s := newTestWriter(t)
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		if _, flushes, _ := s.snapshot(); flushes != 0 {
			t.Errorf("flush with nothing written flushed the sink")
		}

		start := time.Now()
		w.raw([]byte("event: reset\ndata: {}\n\n"), event.TypeReset)
		time.Sleep(time.Second)
		w.raw([]byte("event: status\ndata: {}\n\n"), event.TypeStatus)
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		w.raw([]byte("event: progress\ndata: {}\n\n"), event.TypeProgress)
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		// The deadline moves only once less than half of it is left.
		time.Sleep(testWriteTimeout / 2)
		w.raw([]byte("event: progress\ndata: {}\n\n"), event.TypeProgress)
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		want := []time.Time{start.Add(testWriteTimeout), start.Add(time.Second + testWriteTimeout/2 + testWriteTimeout)}
		if d := s.deadlineList(); !equalTimes(d, want) {
			t.Errorf("deadlines %v, want the first and one refresh: %v", d, want)
		}
		if _, flushes, all := s.snapshot(); flushes != 3 || !all {
			t.Errorf("flushes = %d (all flushed: %v), want 3", flushes, all)
		}
		if w.sent != 4 || !w.last.IsZero() {
			t.Errorf("sent, last = %d, %v; want 4, zero", w.sent, w.last)
		}
		for typ, want := range map[event.Type]float64{event.TypeReset: 1, event.TypeStatus: 1, event.TypeProgress: 2} {
			if n := sentCount(w.metrics, typ); n != want {
				t.Errorf("%s counted %v times, want %v", typ, n, want)
			}
		}

		// The first error sticks: later writes and flushes do nothing.
		s.failWrites(io.ErrClosedPipe)
		w.raw([]byte("event: status\ndata: {}\n\n"), event.TypeStatus)
		s.failWrites(nil)
		w.raw([]byte("event: status\ndata: {}\n\n"), event.TypeStatus)
		if err := w.flush(); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("flush = %v, want %v", err, io.ErrClosedPipe)
		}
		if s.writes != 5 {
			t.Errorf("sink saw %d writes, want 5 (none after the failure)", s.writes)
		}
		if _, flushes, _ := s.snapshot(); flushes != 3 {
			t.Errorf("flushed after a failure")
		}
		if n := sentCount(w.metrics, event.TypeStatus); n != 1 {
			t.Errorf("failed writes counted as sent: %v", n)
		}
	})
}

func TestWriterLoopCountsReplayedAndLatency(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		w, _ := newTestWriter(t)
		c := newClient(4, false)
		fromStream := testFrame(t, "1-0", event.TypeProgress) // a refill read from the stream
		live := testFrame(t, uint64ID(uint64(time.Now().Add(-100*time.Millisecond).UnixMilli())), event.TypeProgress)
		live.live = true
		mustQueue(t, c, fromStream, live)
		ctx, cancel := context.WithCancel(t.Context())
		done := runLoop(ctx, w, c, time.Hour, 2*time.Hour)
		synctest.Wait()
		cancel()
		<-done
		if n := testutil.ToFloat64(w.metrics.eventsReplayed); n != 1 {
			t.Errorf("replayed = %v, want 1 (the frame from the stream only)", n)
		}
		var m dto.Metric
		if err := w.metrics.latency.Write(&m); err != nil {
			t.Fatal(err)
		}
		if h := m.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 0.1 {
			t.Errorf("latency samples = %d, sum %v; want 1, 0.1 (the live frame only)", h.GetSampleCount(), h.GetSampleSum())
		}
	})
}

func TestWriterBatchFrame(t *testing.T) {
	t.Parallel()
	types := []event.Type{event.TypeStatus, event.TypeProgress, event.TypeProgress, event.TypeProgress, event.TypeComplete}
	tests := []struct {
		name     string
		last     string // the writer's last ID; "" for none
		wantFrom int    // index of the first event written; len(types) for none
	}{
		{name: "all new", wantFrom: 0},
		{name: "first known", last: "1-0", wantFrom: 1},
		{name: "between IDs", last: "2-5", wantFrom: 2},
		{name: "all but last known", last: "4-0", wantFrom: 4},
		{name: "all known", last: "5-0", wantFrom: 5},
		{name: "past the batch", last: "9-0", wantFrom: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var frames []*frame
			for i, typ := range types {
				frames = append(frames, testFrame(t, fmt.Sprintf("%d-0", i+1), typ))
			}
			batched := batch(frames, 100)
			if len(batched) != 1 {
				t.Fatalf("batch made %d frames of %d events, want 1", len(batched), len(frames))
			}
			w, s := newTestWriter(t)
			if tt.last != "" {
				id, err := protocol.ParseID(tt.last)
				if err != nil {
					t.Fatal(err)
				}
				w.last = id
			}
			last := w.last
			terminal, err := w.frame(batched[0], false, true)
			if err != nil {
				t.Fatal(err)
			}
			got, _, _ := s.snapshot()
			if want := wires(frames[tt.wantFrom:]...); got != want {
				t.Errorf("wrote\n%q\nwant\n%q", got, want)
			}
			n := len(frames) - tt.wantFrom
			if w.sent != n {
				t.Errorf("sent = %d, want %d", w.sent, n)
			}
			if r := testutil.ToFloat64(w.metrics.eventsReplayed); r != float64(n) {
				t.Errorf("replayed = %v, want %d", r, n)
			}
			for _, typ := range []event.Type{event.TypeStatus, event.TypeProgress, event.TypeComplete} {
				want := 0
				for _, f := range frames[tt.wantFrom:] {
					if f.typ == typ {
						want++
					}
				}
				if c := sentCount(w.metrics, typ); c != float64(want) {
					t.Errorf("%s counted %v, want %d", typ, c, want)
				}
			}
			if n == 0 {
				if terminal || w.last != last {
					t.Errorf("known batch: terminal %v, last %v; want false, %v", terminal, w.last, last)
				}
				return
			}
			if !terminal || w.last != frames[len(frames)-1].id {
				t.Errorf("terminal, last = %v, %v; want true, %v", terminal, w.last, frames[len(frames)-1].id)
			}
		})
	}
}
