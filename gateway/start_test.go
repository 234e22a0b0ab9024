package gateway

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// These tests run Hub.start (start.go) on the in-memory broker and history,
// inside a synctest bubble.

// issued is how many start reads the hub sent.
func (e *hubEnv) issued() float64 {
	return testutil.ToFloat64(e.h.metrics.startReads.WithLabelValues("issued"))
}

// starting joins a client to job; it has not started yet.
func (e *hubEnv) starting(t *testing.T, job string) (*jobSub, *client) {
	t.Helper()
	c := newClient(1000, false)
	js, err := e.h.join(context.Background(), job, c)
	if err != nil {
		t.Fatalf("join %s: %v", job, err)
	}
	return js, c
}

// startOf starts c from ms (resume), or from a snapshot with ms < 0.
func (e *hubEnv) startOf(t *testing.T, js *jobSub, c *client, ms int) start {
	t.Helper()
	s, err := e.h.start(context.Background(), js, c, ms >= 0, protocol.ID{Ms: uint64(max(ms, 0))})
	if err != nil {
		t.Fatalf("start from %d: %v", ms, err)
	}
	return s
}

// live publishes events from..to to the job's stream and its live channel.
func (e *hubEnv) live(job string, from, to uint64, typ event.Type) {
	for ms := from; ms <= to; ms++ {
		data := progressData(job, 1+int(ms%99)) // a valid step of 100, whatever ms
		if typ == event.TypeComplete {
			data = `{"type":"complete","jobId":"` + job + `","reportId":"r","timestamp":"2026-11-27T03:40:30.123Z"}`
		}
		e.hist.add(job, ms, typ, data)
		e.b.publish(job, protocol.ID{Ms: ms}, typ, data)
	}
}

func historyMs(s start) []uint64 {
	var ids []uint64
	for _, h := range s.history {
		ids = append(ids, h.f.id.Ms)
	}
	return ids
}

func wantMs(t *testing.T, what string, got []uint64, from, to uint64) {
	t.Helper()
	var want []uint64
	for ms := from; ms <= to; ms++ {
		want = append(want, ms)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: history %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: history %v, want %v", what, got, want)
		}
	}
}

// TestStartSharesOneRead: streams that start while a read of their job is
// in flight wait for it instead of sending their own, and each gets the
// events after its own resume point; a snapshot uses it too.
func TestStartSharesOneRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		e.add("j", 1, 10)
		e.hist.hold()
		type result struct {
			from int
			s    start
		}
		results := make(chan result, 4)
		for i, from := range []int{2, 5, 9, -1} {
			js, c := e.starting(t, "j")
			go func() { results <- result{from, e.startOf(t, js, c, from)} }()
			if i == 0 {
				synctest.Wait() // the first read is in flight before the others start
			}
		}
		synctest.Wait()
		if e.hist.reads != 1 || e.issued() != 1 {
			t.Fatalf("%d reads in flight (%v issued) for 4 starts, want 1", e.hist.reads, e.issued())
		}
		e.hist.release()
		for range 4 {
			r := <-results
			if r.from < 0 {
				if r.s.st == nil || r.s.st.lastID.Ms != 10 || len(r.s.history) != 0 {
					t.Fatalf("snapshot start: state %+v, history %v", r.s.st, historyMs(r.s))
				}
				continue
			}
			if !r.s.found {
				t.Fatalf("start from %d: not found", r.from)
			}
			wantMs(t, "start", historyMs(r.s), uint64(r.from)+1, 10)
		}
		if got := testutil.ToFloat64(e.h.metrics.startReads.WithLabelValues("shared")); got != 3 {
			t.Errorf("%v starts shared the read, want 3", got)
		}
	})
}

// TestStartTail: a stream that joins after the shared read was made gets,
// from it, what was published since, without a read of its own: the read
// and its tail hold every event up to its live queue.
func TestStartTail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		e.add("j", 1, 10)
		js, c := e.starting(t, "j")
		wantMs(t, "first", historyMs(e.startOf(t, js, c, 5)), 6, 10)
		e.live("j", 11, 12, event.TypeProgress)
		synctest.Wait()

		js, c = e.starting(t, "j")
		s := e.startOf(t, js, c, 5)
		wantMs(t, "later resume", historyMs(s), 6, 12)
		js, c = e.starting(t, "j")
		wantMs(t, "resume from the tail", historyMs(e.startOf(t, js, c, 11)), 12, 12)
		js, c = e.starting(t, "j")
		s = e.startOf(t, js, c, -1)
		if s.st.lastID.Ms != 10 {
			t.Fatalf("snapshot at %v, want the read's 10", s.st.lastID)
		}
		wantMs(t, "snapshot, then what followed it", historyMs(s), 11, 12)
		if e.issued() != 1 {
			t.Errorf("%v reads issued, want 1", e.issued())
		}
		if s.finished {
			t.Error("finished without a terminal event")
		}

		// The job ends: the next start is told so, to answer it as a
		// finished job's.
		e.live("j", 13, 13, event.TypeComplete)
		synctest.Wait()
		js, c = e.starting(t, "j")
		if s := e.startOf(t, js, c, 5); !s.finished {
			t.Error("a start after the terminal event is not told the job finished")
		}
	})
}

// TestStartExpires: a read is shared while streams keep starting from it,
// until a second after the last one, and for maxShare at most.
func TestStartExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		e.add("j", 1, 10)
		for range 6 * int(maxShare/shareFor) {
			js, c := e.starting(t, "j")
			e.startOf(t, js, c, 5)
			time.Sleep(shareFor / 3)
		}
		// 2 × maxShare in all: one read per maxShare (a third if the
		// last one falls on the boundary).
		if got := e.issued(); got < 2 || got > 3 {
			t.Fatalf("%v reads issued for starts a third of shareFor apart over %v, want 2 or 3", got, 2*maxShare)
		}
		before := e.issued()
		time.Sleep(shareFor + time.Millisecond)
		js, c := e.starting(t, "j")
		e.startOf(t, js, c, 5)
		if e.issued() != before+1 {
			t.Errorf("a start shareFor after the last one did not read again")
		}
	})
}

// TestStartSealed: a read stops serving streams that join once its tail
// can miss events: after the subscription was lost (even once refilled),
// when its tail is full, and for a resume from before its own point.
func TestStartSealed(t *testing.T) {
	cases := []struct {
		name  string
		seal  func(e *hubEnv)
		from  int
		reads float64 // issued, the first start's included
	}{
		{"nothing", func(*hubEnv) {}, 5, 1},
		{"lost and refilled", func(e *hubEnv) {
			e.b.fail()
			synctest.Wait()
			e.b.confirmAll()
		}, 5, 2},
		{"tail full", func(e *hubEnv) { e.live("j", 11, 11+maxTail, event.TypeProgress) }, 5, 2},
		{"older point", func(*hubEnv) {}, 3, 2},
		{"newer point", func(*hubEnv) {}, 8, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newTestHub(t, Config{}, false)
				e.add("j", 1, 10)
				js, c := e.starting(t, "j")
				e.startOf(t, js, c, 5)
				tc.seal(e)
				synctest.Wait()
				js, c = e.starting(t, "j")
				s := e.startOf(t, js, c, tc.from)
				if e.issued() != tc.reads {
					t.Errorf("%v reads issued, want %v", e.issued(), tc.reads)
				}
				last := uint64(10)
				if n := len(s.history); n > 0 {
					last = s.history[n-1].f.id.Ms
				}
				if got := historyMs(s); len(got) == 0 || got[0] != uint64(tc.from)+1 || uint64(len(got)) != last-uint64(tc.from) {
					t.Errorf("history %v from %d: not every event after it", got, tc.from)
				}
			})
		})
	}
}

// TestStartSealedAtIssue: a read made while the subscription is lost, or
// while a refill holds live frames back, is not shared with streams that
// join after it.
func TestStartSealedAtIssue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestHub(t, Config{}, false)
		e.add("j", 1, 10)
		js, c := e.starting(t, "j")
		e.b.fail()
		synctest.Wait()
		e.startOf(t, js, c, 5) // joined before the loss; starts during it
		js.mu.Lock()
		sealed := js.read != nil && js.read.sealed
		js.mu.Unlock()
		if !sealed {
			t.Fatal("a read made while the subscription is lost is not sealed")
		}
		e.b.confirmAll()
		synctest.Wait()
		js, c = e.starting(t, "j")
		e.startOf(t, js, c, 5)
		if e.issued() != 2 {
			t.Errorf("%v reads issued, want 2: the one made in the gap is not shared", e.issued())
		}
	})
}
