package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// These tests run Hub.start (start.go) on the in-memory broker and history,
// inside a synctest bubble: the streams that start on a job share one read
// of it (sharedRead), each from its own Last-Event-ID, plus the live frames
// fanned out since the read (its tail), until the read is sealed or expires.

// faultHistory is the in-memory history whose start reads can be made to
// fail: every start read waits like memHistory's (hold, release), then
// returns err if one is set.
type faultHistory struct {
	*memHistory

	emu sync.Mutex // guards err
	err error
}

var _ history = (*faultHistory)(nil)

func (f *faultHistory) start(ctx context.Context, job string, resume bool, from protocol.ID) (startRead, error) {
	r, err := f.memHistory.start(ctx, job, resume, from)
	f.emu.Lock()
	defer f.emu.Unlock()
	if err == nil && f.err != nil {
		return startRead{}, f.err
	}
	return r, err
}

func (f *faultHistory) failWith(err error) {
	f.emu.Lock()
	defer f.emu.Unlock()
	f.err = err
}

type startEnv struct {
	*hubEnv
	fh *faultHistory
}

// newStartEnv runs a hub on a faultHistory until the test ends. Call it
// inside the bubble.
func newStartEnv(t *testing.T) *startEnv {
	t.Helper()
	fh := &faultHistory{memHistory: newMemHistory()}
	h, b, _ := runTestHub(t, Config{}, fh, false)
	return &startEnv{hubEnv: &hubEnv{h: h, b: b, hist: fh.memHistory}, fh: fh}
}

// startData is a valid event of job at ms (progressData is not past 100).
func startData(job string, ms uint64, typ event.Type) string {
	switch typ {
	case event.TypeComplete:
		return fmt.Sprintf(`{"type":"complete","jobId":%q,"reportId":"r","timestamp":"2026-11-27T03:40:30.123Z"}`, job)
	case event.TypeProgress:
		return progressData(job, int(ms%100))
	}
	panic("startData: " + typ)
}

// put appends progress events from..to to the job's stream only: not (yet)
// delivered live.
func (e *startEnv) put(job string, from, to uint64) {
	for ms := from; ms <= to; ms++ {
		e.hist.add(job, ms, event.TypeProgress, startData(job, ms, event.TypeProgress))
	}
}

// live appends events from..to to the job's stream and publishes them on
// its live channel (delivered once the broker's goroutine runs).
func (e *startEnv) live(job string, from, to uint64, typ event.Type) {
	for ms := from; ms <= to; ms++ {
		data := startData(job, ms, typ)
		e.hist.add(job, ms, typ, data)
		e.b.publish(job, protocol.ID{Ms: ms}, typ, data)
	}
}

// startReads is the start-reads metric of label read.
func (e *startEnv) startReads(read string) float64 {
	return testutil.ToFloat64(e.h.metrics.startReads.WithLabelValues(read))
}

// historyReads is how many reads reached the history (any kind).
func (e *startEnv) historyReads() int {
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	return e.hist.reads
}

// join joins a new client to job; it has not started.
func (e *startEnv) join(t *testing.T, job string) (*jobSub, *client) {
	t.Helper()
	c := newClient(2*maxTail, false)
	js, err := e.h.join(context.Background(), job, c)
	if err != nil {
		t.Fatalf("join %s: %v", job, err)
	}
	return js, c
}

// from is a start's resume point: a Last-Event-ID of ms, or a snapshot
// (no Last-Event-ID) for ms < 0.
func from(ms int) (bool, protocol.ID) { return ms >= 0, protocol.ID{Ms: uint64(max(ms, 0))} }

// mustStart starts c from ms on the test's goroutine.
func (e *startEnv) mustStart(t *testing.T, js *jobSub, c *client, ms int) start {
	t.Helper()
	resume, id := from(ms)
	s, err := e.h.start(context.Background(), js, c, resume, id)
	if err != nil {
		t.Fatalf("start from %d: %v", ms, err)
	}
	return s
}

type startResult struct {
	ms  int
	s   start
	err error
}

// goStart starts c from ms on a goroutine of its own; its result comes on
// the channel.
func (e *startEnv) goStart(ctx context.Context, js *jobSub, c *client, ms int) <-chan startResult {
	ch := make(chan startResult, 1)
	go func() {
		resume, id := from(ms)
		s, err := e.h.start(ctx, js, c, resume, id)
		ch <- startResult{ms, s, err}
	}()
	return ch
}

// readOf returns the job's current shared read and, read under its lock,
// whether it is sealed, when, and its tail's length.
func readOf(js *jobSub) (r *sharedRead, sealed bool, sealedAt uint64, tail int) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.read == nil {
		return nil, false, 0, 0
	}
	return js.read, js.read.sealed, js.read.sealedAt, len(js.read.tail)
}

func sealedState(js *jobSub, r *sharedRead) (sealed bool, sealedAt uint64) {
	js.mu.Lock()
	defer js.mu.Unlock()
	return r.sealed, r.sealedAt
}

func historyIDs(s start) []uint64 {
	var ids []uint64
	for _, h := range s.history {
		if h.f == nil {
			ids = append(ids, 0) // unreadable: never expected here
			continue
		}
		ids = append(ids, h.f.id.Ms)
	}
	return ids
}

func span(from, to uint64) []uint64 {
	var ids []uint64
	for ms := from; ms <= to; ms++ {
		ids = append(ids, ms)
	}
	return ids
}

// checkHistory fails unless s is a found resume whose history is exactly
// from..to.
func checkHistory(t *testing.T, what string, s start, from, to uint64) {
	t.Helper()
	if !s.found {
		t.Errorf("%s: found = false, want true", what)
	}
	if got, want := historyIDs(s), span(from, to); !slices.Equal(got, want) {
		t.Errorf("%s: history %v, want %v", what, short(got), short(want))
	}
}

// short abbreviates long ID lists in failure messages.
func short(ids []uint64) string {
	if len(ids) <= 12 {
		return fmt.Sprint(ids)
	}
	return fmt.Sprintf("%v … %v (%d)", ids[:5], ids[len(ids)-5:], len(ids))
}

// TestStartSharesOneRead: streams that start while a read of their job is
// in flight wait for it instead of sending their own: one read reaches the
// history, and each stream gets the events after its own resume point (a
// snapshot start gets the state). A waiter whose context ends stops
// waiting without ending the read for the others.
func TestStartSharesOneRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		e.hist.hold()
		points := []int{2, 5, 9, 2, 10, -1}
		var results []<-chan startResult
		for i, ms := range points {
			js, c := e.join(t, "j")
			results = append(results, e.goStart(context.Background(), js, c, ms))
			if i == 0 {
				synctest.Wait() // the first start's read is in flight before the others start
			}
		}
		// One more, whose client leaves while it waits.
		js, c := e.join(t, "j")
		ctx, cancel := context.WithCancel(context.Background())
		gone := e.goStart(ctx, js, c, 5)
		synctest.Wait()
		if n := e.historyReads(); n != 1 {
			t.Fatalf("%d reads reached the history for %d concurrent starts, want 1", n, len(points)+1)
		}
		cancel()
		synctest.Wait()
		select {
		case r := <-gone:
			if !errors.Is(r.err, context.Canceled) {
				t.Errorf("a waiter whose context ended returned %v, want context.Canceled", r.err)
			}
		default:
			t.Fatal("a waiter whose context ended still waits for the read")
		}
		e.hist.release()
		for _, ch := range results {
			r := <-ch
			if r.err != nil {
				t.Fatalf("start from %d: %v", r.ms, r.err)
			}
			if r.s.st == nil || r.s.st.lastID.Ms != 10 {
				t.Fatalf("start from %d: state %+v, want the job at 10", r.ms, r.s.st)
			}
			if r.s.finished {
				t.Errorf("start from %d: finished without a terminal event", r.ms)
			}
			if r.ms < 0 {
				if len(r.s.history) != 0 {
					t.Errorf("snapshot start: history %v, want none", historyIDs(r.s))
				}
				continue
			}
			checkHistory(t, fmt.Sprintf("start from %d", r.ms), r.s, uint64(r.ms)+1, 10)
		}
		if n := e.historyReads(); n != 1 {
			t.Errorf("%d reads after the shared one completed, want 1", n)
		}
		// Shared counts the starts served from another's read: not the
		// issuer, not the one that left.
		if e.startReads("issued") != 1 || e.startReads("shared") != float64(len(points)-1) {
			t.Errorf("metric: %v issued, %v shared; want 1, %d", e.startReads("issued"), e.startReads("shared"), len(points)-1)
		}
	})
}

// TestStartTail: a stream that joins after the shared read was made gets,
// from it, the events published live since, without a read of its own,
// from whatever point: the read's page then its tail, or the tail alone.
// An event both in the read and in the tail (published while the read was
// in flight) is there once.
func TestStartTail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		e.hist.hold()
		js, c := e.join(t, "j")
		first := e.goStart(context.Background(), js, c, 5)
		synctest.Wait()
		// Published while the read waits: in the stream it reads, and in
		// its tail.
		e.live("j", 11, 12, event.TypeProgress)
		synctest.Wait()
		e.hist.release()
		r := <-first
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkHistory(t, "the first start, with 11 and 12 in its read and its tail", r.s, 6, 12)

		e.live("j", 13, 14, event.TypeProgress) // after the read: its tail only
		synctest.Wait()
		for _, tc := range []struct {
			ms       int
			from, to uint64
		}{
			{5, 6, 14},   // the read's page, then the tail
			{9, 10, 14},  // within the page
			{12, 13, 14}, // the read's last entry
			{13, 14, 14}, // within the tail
			{14, 15, 14}, // the tail's last frame: nothing after it
		} {
			js, c := e.join(t, "j")
			checkHistory(t, fmt.Sprintf("a later start from %d", tc.ms), e.mustStart(t, js, c, tc.ms), tc.from, tc.to)
		}
		js, c = e.join(t, "j")
		s := e.mustStart(t, js, c, -1)
		if s.st == nil || s.st.lastID.Ms != 12 {
			t.Fatalf("snapshot start: state %+v, want the read's, at 12", s.st)
		}
		if got := historyIDs(s); !slices.Equal(got, []uint64{13, 14}) {
			t.Errorf("snapshot start: history %v, want what followed the state, [13 14]", got)
		}
		if n := e.historyReads(); n != 1 || e.startReads("issued") != 1 {
			t.Errorf("%d history reads, %v issued: the later starts did not all use the tail", n, e.startReads("issued"))
		}
	})
}

// TestStartTrimmedResumePoint: a shared read from a point no longer in the
// stream tells every stream from that point so (found false), with what
// followed the state; one from a point in its page is found.
func TestStartTrimmedResumePoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 5, 10) // 1 to 4 trimmed
		js, c := e.join(t, "j")
		if s := e.mustStart(t, js, c, 3); s.found || len(s.history) != 0 {
			t.Fatalf("start from trimmed 3: found %v, history %v; want false, none", s.found, historyIDs(s))
		}
		e.live("j", 11, 11, event.TypeProgress)
		synctest.Wait()
		js, c = e.join(t, "j")
		s := e.mustStart(t, js, c, 3)
		if s.found || !slices.Equal(historyIDs(s), []uint64{11}) {
			t.Errorf("later start from trimmed 3: found %v, history %v; want false, [11]", s.found, historyIDs(s))
		}
		js, c = e.join(t, "j")
		checkHistory(t, "later start from 7", e.mustStart(t, js, c, 7), 8, 11)
		if e.historyReads() != 1 {
			t.Errorf("%d history reads, want 1", e.historyReads())
		}
	})
}

// TestStartExpires: a read is shared while streams keep starting from it,
// until shareFor after the last one, and for maxShare at most.
func TestStartExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c := e.join(t, "j")
		e.mustStart(t, js, c, 5)
		time.Sleep(shareFor + time.Millisecond)
		js, c = e.join(t, "j")
		checkHistory(t, "start after shareFor", e.mustStart(t, js, c, 5), 6, 10)
		if n := e.historyReads(); n != 2 {
			t.Fatalf("a start shareFor after the only other one: %d history reads, want 2", n)
		}

		// Starts 0.4 s apart keep the read (issued at 0, now at reads 2)
		// until maxShare after it was made, not longer.
		step := shareFor * 2 / 5
		var at time.Duration
		for at = step; at < maxShare; at += step {
			time.Sleep(step)
			js, c = e.join(t, "j")
			e.mustStart(t, js, c, 5)
			if n := e.historyReads(); n != 2 {
				t.Fatalf("a start %v after the read, %v after the previous one: %d history reads, want 2", at, step, n)
			}
		}
		time.Sleep(step) // now past maxShare
		js, c = e.join(t, "j")
		e.mustStart(t, js, c, 5)
		if n := e.historyReads(); n != 3 {
			t.Errorf("a start %v after the read (maxShare %v): %d history reads, want 3", at, maxShare, n)
		}
		if _, sealed, _, _ := readOf(js); sealed {
			t.Error("the new read is sealed")
		}
	})
}

// TestStartSealedByLoss: once the job's subscription is lost, its read is
// sealed: a stream that starts then (even one that joined before) reads on
// its own, and that read, made while the gap is open, is sealed from the
// start; so is one made while a refill runs. Once the gap is refilled,
// starts share a read again.
func TestStartSealedByLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c1 := e.join(t, "j")
		e.mustStart(t, js, c1, 5)
		e.h.started(js, c1, protocol.ID{Ms: 10})
		r1, _, _, _ := readOf(js)
		_, c2 := e.join(t, "j") // before the loss; starts after it
		e.live("j", 11, 11, event.TypeProgress)
		synctest.Wait()

		e.b.fail()
		synctest.Wait()
		if sealed, at := sealedState(js, r1); !sealed || at != c2.seq {
			t.Fatalf("after the loss: read sealed %v at %d, want sealed at %d (the joins so far)", sealed, at, c2.seq)
		}
		e.put("j", 12, 12) // published while lost: never in the tail
		s := e.mustStart(t, js, c2, 5)
		checkHistory(t, "a start after the loss", s, 6, 12)
		if n := e.historyReads(); n != 2 {
			t.Fatalf("a start after the loss used the sealed read: %d history reads, want 2", n)
		}
		r2, sealed, _, _ := readOf(js)
		if r2 == r1 || !sealed {
			t.Fatalf("the read made in the gap is sealed %v (new %v), want a new, sealed read", sealed, r2 != r1)
		}

		// Back: the refill runs (held), and a read made meanwhile is
		// sealed too.
		e.hist.hold()
		e.b.confirmAll()
		synctest.Wait()
		js.mu.Lock()
		refilling := js.refilling
		js.mu.Unlock()
		if !refilling {
			t.Fatal("no refill runs after the subscription came back")
		}
		_, c3 := e.join(t, "j")
		during := e.goStart(context.Background(), js, c3, 5)
		synctest.Wait()
		if r3, sealed, _, _ := readOf(js); r3 == r2 || !sealed {
			t.Errorf("a read made during the refill: sealed %v (new %v), want a new, sealed read", sealed, r3 != r2)
		}
		e.hist.release()
		if r := <-during; r.err != nil {
			t.Fatal(r.err)
		} else {
			checkHistory(t, "a start during the refill", r.s, 6, 12)
		}
		synctest.Wait()
		js.mu.Lock()
		refilling, gap := js.refilling, js.gap
		js.mu.Unlock()
		if refilling || gap {
			t.Fatalf("after the refill: refilling %v, gap %v", refilling, gap)
		}

		// Refilled: a new read is shared again.
		before := e.historyReads()
		for i := range 2 {
			_, c := e.join(t, "j")
			checkHistory(t, "a start after the refill", e.mustStart(t, js, c, 5), 6, 12)
			if n := e.historyReads(); n != before+1 {
				t.Fatalf("start %d after the refill: %d history reads, want %d", i, n, before+1)
			}
		}
		if _, sealed, _, _ := readOf(js); sealed {
			t.Error("the read made after the refill is sealed")
		}
	})
}

// TestStartSealedBy: every event that can leave a read's tail short seals
// it: the streams that start afterwards, even those that joined before,
// read on their own and get every event.
func TestStartSealedBy(t *testing.T) {
	cases := []struct {
		name string
		seal func(e *startEnv, js *jobSub)
	}{
		{"refill", func(e *startEnv, js *jobSub) { e.h.refill(js) }},
		{"vanished", func(e *startEnv, _ *jobSub) { e.h.vanished("j") }},
		{"ahead of stream", func(e *startEnv, _ *jobSub) {
			e.h.aheadOfStream("j", protocol.ID{Ms: 10}, protocol.ID{Ms: 10})
		}},
		{"expired", func(*startEnv, *jobSub) { time.Sleep(shareFor + time.Millisecond) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newStartEnv(t)
				e.put("j", 1, 10)
				js, c1 := e.join(t, "j")
				e.mustStart(t, js, c1, 5)
				e.h.started(js, c1, protocol.ID{Ms: 10})
				r1, _, _, _ := readOf(js)
				_, c2 := e.join(t, "j")
				reads := e.historyReads()
				tc.seal(e, js)
				synctest.Wait()
				if sealed, _ := sealedState(js, r1); !sealed {
					t.Fatal("the read is not sealed")
				}
				reads = e.historyReads() - reads // the sealing's own reads (a refill's)
				e.put("j", 11, 11)               // never delivered live
				checkHistory(t, "a start after the seal", e.mustStart(t, js, c2, 5), 6, 11)
				if n := e.historyReads(); n != 2+reads {
					t.Errorf("a start after the seal: %d history reads, want %d: it used the sealed read", n, 2+reads)
				}
			})
		})
	}
}

// TestStartSealedDuringRefill: a read made while a refill holds live
// frames back (the subscription up, no gap: a refill of a live message
// ahead of the stream) is sealed from the start: its tail would miss the
// frames held back. The streams that start after it read on their own.
func TestStartSealedDuringRefill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c1 := e.join(t, "j")
		e.mustStart(t, js, c1, 5)
		e.h.started(js, c1, protocol.ID{Ms: 10})
		e.hist.hold()
		e.h.refill(js)
		synctest.Wait()
		js.mu.Lock()
		refilling, gap := js.refilling, js.gap
		js.mu.Unlock()
		if !refilling || gap {
			t.Fatalf("refilling %v, gap %v; want a refill without a gap", refilling, gap)
		}
		_, c2 := e.join(t, "j")
		during := e.goStart(context.Background(), js, c2, 5)
		synctest.Wait()
		r2, sealed, _, _ := readOf(js)
		if !sealed {
			t.Fatal("a read made during a refill is not sealed")
		}
		e.hist.release()
		if r := <-during; r.err != nil {
			t.Fatal(r.err)
		} else {
			checkHistory(t, "a start during the refill", r.s, 6, 10)
		}
		synctest.Wait()
		reads := e.historyReads() // the first start's, the refill's, the one during it
		_, c3 := e.join(t, "j")
		checkHistory(t, "a start after the refill", e.mustStart(t, js, c3, 5), 6, 10)
		if r3, _, _, _ := readOf(js); r3 == r2 || e.historyReads() != reads+1 {
			t.Errorf("a start after the refill used the read made during it (%d history reads, want %d)", e.historyReads(), reads+1)
		}
	})
}

// TestStartSealedServesEarlierJoiners: a read sealed while in flight still
// serves the streams that joined before the seal and wait for it: their
// live queue has every frame since they joined.
func TestStartSealedServesEarlierJoiners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		e.hist.hold()
		js, c1 := e.join(t, "j")
		first := e.goStart(context.Background(), js, c1, 5)
		synctest.Wait()
		_, c2 := e.join(t, "j")
		second := e.goStart(context.Background(), js, c2, 7)
		synctest.Wait()
		e.b.fail()
		synctest.Wait()
		if _, sealed, _, _ := readOf(js); !sealed {
			t.Fatal("the read in flight is not sealed by the loss")
		}
		e.hist.release()
		for _, ch := range []<-chan startResult{first, second} {
			r := <-ch
			if r.err != nil {
				t.Fatalf("start from %d: %v", r.ms, r.err)
			}
			checkHistory(t, fmt.Sprintf("start from %d", r.ms), r.s, uint64(r.ms)+1, 10)
		}
		if n := e.historyReads(); n != 1 {
			t.Errorf("%d history reads, want 1: the earlier joiner did not use the sealed read", n)
		}
	})
}

// TestStartTailOverflow: a read's tail holds maxTail frames; the next one
// seals it, and a stream that starts afterwards reads on its own.
func TestStartTailOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c := e.join(t, "j")
		e.mustStart(t, js, c, 5)
		r1, _, _, _ := readOf(js)
		e.live("j", 11, 10+maxTail, event.TypeProgress) // exactly a full tail
		synctest.Wait()
		if r, sealed, _, tail := readOf(js); r != r1 || sealed || tail != maxTail {
			t.Fatalf("after %d frames: same read %v, sealed %v, tail %d; want the read unsealed with all of them", maxTail, r == r1, sealed, tail)
		}
		_, c = e.join(t, "j")
		checkHistory(t, "a start with the tail full", e.mustStart(t, js, c, 5), 6, 10+maxTail)
		if n := e.historyReads(); n != 1 {
			t.Fatalf("a start with the tail full: %d history reads, want 1", n)
		}

		e.live("j", 11+maxTail, 11+maxTail, event.TypeProgress) // one more
		synctest.Wait()
		if sealed, at := sealedState(js, r1); !sealed || at != c.seq {
			t.Fatalf("past maxTail: sealed %v at %d, want sealed at %d", sealed, at, c.seq)
		}
		if _, _, _, tail := readOf(js); tail != maxTail {
			t.Errorf("the sealed tail grew to %d", tail)
		}
		_, c = e.join(t, "j")
		s := e.mustStart(t, js, c, 5)
		if n := e.historyReads(); n != 2 {
			t.Fatalf("a start after the overflow: %d history reads, want 2", n)
		}
		// Its own read holds a page: the replay reads on from the stream.
		if !s.found || !s.more || len(s.history) != replayPage || s.history[0].f.id.Ms != 6 {
			t.Errorf("a start after the overflow: found %v, more %v, %d entries from %v", s.found, s.more, len(s.history), historyIDs(s)[:1])
		}
	})
}

// TestStartResumePoints: a read serves streams from its own point or a
// newer one; one from an older point (or a resume after a snapshot read)
// reads again, and its read replaces the old one; a snapshot start uses a
// resume read.
func TestStartResumePoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c := e.join(t, "j")
		e.mustStart(t, js, c, 5)
		r5, _, _, _ := readOf(js)

		_, c = e.join(t, "j")
		checkHistory(t, "newer point", e.mustStart(t, js, c, 8), 9, 10)
		if n := e.historyReads(); n != 1 {
			t.Fatalf("a newer point: %d history reads, want 1", n)
		}
		_, c = e.join(t, "j")
		if s := e.mustStart(t, js, c, -1); s.st == nil || len(s.history) != 0 || e.historyReads() != 1 {
			t.Fatalf("a snapshot start: state %+v, history %v, %d history reads; want the read's state alone", s.st, historyIDs(s), e.historyReads())
		}

		_, c = e.join(t, "j")
		checkHistory(t, "older point", e.mustStart(t, js, c, 3), 4, 10)
		if n := e.historyReads(); n != 2 {
			t.Fatalf("an older point: %d history reads, want 2", n)
		}
		r3, sealed, _, _ := readOf(js)
		if r3 == r5 || sealed || r3.from.Ms != 3 {
			t.Fatalf("after the older point: read from %v (new %v), sealed %v; want a new unsealed read from 3", r3.from, r3 != r5, sealed)
		}
		if sealed, _ := sealedState(js, r5); !sealed {
			t.Error("the replaced read is not sealed")
		}
		_, c = e.join(t, "j")
		checkHistory(t, "a point between the two", e.mustStart(t, js, c, 4), 5, 10)
		if n := e.historyReads(); n != 2 {
			t.Errorf("a point between: %d history reads, want 2 (the read from 3)", n)
		}

		// A snapshot read does not serve a resume.
		e.put("k", 1, 10)
		jk, c := e.join(t, "k")
		e.mustStart(t, jk, c, -1)
		_, c = e.join(t, "k")
		checkHistory(t, "a resume after a snapshot read", e.mustStart(t, jk, c, 5), 6, 10)
		if n := e.historyReads(); n != 4 {
			t.Errorf("a resume after a snapshot read: %d history reads in all, want 4", n)
		}
	})
}

// TestStartReadError: a failed read is every waiter's error, and it is not
// kept: the next start reads again.
func TestStartReadError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		boom := errors.New("injected start read failure")
		e.fh.failWith(boom)
		e.hist.hold()
		var results []<-chan startResult
		for i, ms := range []int{5, 7, -1} {
			js, c := e.join(t, "j")
			results = append(results, e.goStart(context.Background(), js, c, ms))
			if i == 0 {
				synctest.Wait()
			}
		}
		synctest.Wait()
		if n := e.historyReads(); n != 1 {
			t.Fatalf("%d history reads, want 1", n)
		}
		e.hist.release()
		for _, ch := range results {
			if r := <-ch; !errors.Is(r.err, boom) {
				t.Errorf("start from %d: err %v, want the read's", r.ms, r.err)
			}
		}
		js, c := e.join(t, "j")
		if r, _, _, _ := readOf(js); r != nil {
			t.Fatal("the failed read is kept for later starts")
		}
		e.fh.failWith(nil)
		checkHistory(t, "a start after the failure", e.mustStart(t, js, c, 5), 6, 10)
		if n := e.historyReads(); n != 2 {
			t.Errorf("a start after the failure: %d history reads, want 2", n)
		}
	})
}

// TestStartFinished: a start whose read's tail holds the job's terminal
// event is told the job finished (to answer it as a finished job's); one
// without it is not.
func TestStartFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c := e.join(t, "j")
		if s := e.mustStart(t, js, c, 5); s.finished {
			t.Fatal("finished at the first start")
		}
		e.live("j", 11, 11, event.TypeProgress)
		synctest.Wait()
		_, c = e.join(t, "j")
		if s := e.mustStart(t, js, c, 5); s.finished {
			t.Fatal("finished with only progress in the tail")
		}
		e.live("j", 12, 12, event.TypeComplete)
		synctest.Wait()
		for _, ms := range []int{5, 11, -1} {
			_, c = e.join(t, "j")
			if s := e.mustStart(t, js, c, ms); !s.finished {
				t.Errorf("start from %d after the terminal event: finished false", ms)
			}
		}
		if n := e.historyReads(); n != 1 {
			t.Errorf("%d history reads, want 1", n)
		}
	})
}

// TestStartResumeAheadOfTail (red before the fix in serve): a stream that
// resumes from an event newer than the shared read's page, which this
// instance has not fanned out yet (its live delivery lags the XADD, e.g.
// the client saw it from another instance a moment earlier), is told its
// point is not in the stream (found false: a reset and a snapshot older
// than its point), though the stream holds it and a read of its own would
// find it. serve took "past every entry read" for "in the tail, or not in
// the stream", missing the events added after the read whose live frames
// had not come yet; it now reads on its own past everything it holds.
func TestStartResumeAheadOfTail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 10)
		js, c := e.join(t, "j")
		e.mustStart(t, js, c, 5)
		e.put("j", 11, 11) // in the stream; its live message not delivered yet
		own, err := e.fh.start(context.Background(), "j", true, protocol.ID{Ms: 11})
		if err != nil || !own.found {
			t.Fatalf("a read of its own from 11: found %v, err %v", own.found, err)
		}
		_, c = e.join(t, "j")
		s := e.mustStart(t, js, c, 11)
		if !s.found {
			t.Errorf("a resume from 11 (in the stream, not yet in the tail) is answered found=false, history %v: a reset and the snapshot at %v instead of the events after 11", historyIDs(s), s.st.lastID)
		}
	})
}

// TestStartPastPageCountedOnce (red before the metric moved): a start
// whose resume point is past the page of the shared read reads on its own
// and is counted in ssegate_stream_start_reads_total once, as issued, not
// also as shared.
func TestStartPastPageCountedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newStartEnv(t)
		e.put("j", 1, 2*replayPage)
		js, c := e.join(t, "j")
		if s := e.mustStart(t, js, c, 5); !s.more {
			t.Fatal("the first read is not a page of more")
		}
		_, c = e.join(t, "j")
		checkHistory(t, "a start past the page", e.mustStart(t, js, c, replayPage+50), replayPage+51, 2*replayPage)
		if n := e.historyReads(); n != 2 {
			t.Fatalf("%d history reads, want 2", n)
		}
		issued, shared := e.startReads("issued"), e.startReads("shared")
		if issued+shared != 2 {
			t.Errorf("2 starts counted %v times (%v issued, %v shared), want issued 2, shared 0", issued+shared, issued, shared)
		}
	})
}
