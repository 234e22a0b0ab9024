package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// These tests run a refill (refill.go) on the in-memory broker and a
// history whose refill reads fail for a while, inside a synctest bubble:
// a Redis restarted with persistence answers LOADING to reads while its
// SUBSCRIBE already works.

// errLoading is what a restarted Redis answers while it loads its dataset.
var errLoading = errors.New("LOADING Redis is loading the dataset in memory")

// failingHistory is the in-memory history whose refill reads (after, page)
// fail with errLoading while fails is above zero, each failure taking one
// off; a negative fails fails every read. Start reads never fail.
type failingHistory struct {
	*memHistory

	fmu   sync.Mutex // guards fails and tries
	fails int
	tries int // refill reads made, failed or not
}

var _ history = (*failingHistory)(nil)

func (f *failingHistory) failNext(n int) {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	f.fails = n
}

func (f *failingHistory) try() error {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	f.tries++
	if f.fails == 0 {
		return nil
	}
	if f.fails > 0 {
		f.fails--
	}
	return errLoading
}

func (f *failingHistory) reads() int {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	return f.tries
}

func (f *failingHistory) after(ctx context.Context, job string, id protocol.ID) ([]redis.XMessage, bool, error) {
	if err := f.try(); err != nil {
		return nil, false, err
	}
	return f.memHistory.after(ctx, job, id)
}

func (f *failingHistory) page(ctx context.Context, job string, id protocol.ID, n int64) ([]redis.XMessage, error) {
	if err := f.try(); err != nil {
		return nil, err
	}
	return f.memHistory.page(ctx, job, id, n)
}

type retryEnv struct {
	*hubEnv
	fh   *failingHistory
	stop func() // ends the hub's context and waits for run to return
}

// newRetryEnv runs a hub on a failingHistory until stop or the end of the
// test. Call it inside the bubble.
func newRetryEnv(t *testing.T) *retryEnv {
	t.Helper()
	fh := &failingHistory{memHistory: newMemHistory()}
	h, b, stop := runTestHub(t, Config{}, fh, false)
	return &retryEnv{hubEnv: &hubEnv{h: h, b: b, hist: fh.memHistory}, fh: fh, stop: stop}
}

// liveOne appends ms to the job's stream and publishes it live.
func (e *retryEnv) liveOne(job string, ms uint64) {
	e.add(job, ms, ms)
	e.b.publish(job, protocol.ID{Ms: ms}, event.TypeProgress, progressData(job, int(ms)))
}

func (e *retryEnv) resyncErrors() float64 {
	return testutil.ToFloat64(e.h.metrics.redisErrors.WithLabelValues("resync"))
}

// gotAfter is what c got of events after ms: a batch frame carries what the
// client has too, which its writer skips.
func gotAfter(c *client, ms uint64) []uint64 {
	return slices.DeleteFunc(queuedIDs(c), func(id uint64) bool { return id <= ms })
}

func notKicked(t *testing.T, name string, c *client) {
	t.Helper()
	if c.gone.Load() {
		t.Errorf("%s client kicked (%s)", name, c.kickReason)
	}
}

// TestHubRefillRetriesFailedRead: a refill whose first reads fail (Redis
// loading its dataset after a restart) reads again after a short wait,
// instead of closing the job's streams: the clients get what they missed
// and what came live meanwhile, in order and once, and stay open.
func TestHubRefillRetriesFailedRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newRetryEnv(t)
		const job = "retry"
		e.add(job, 1, 3)
		_, behind := e.joined(t, job, 2)
		_, current := e.joined(t, job, 3)

		e.b.fail()
		synctest.Wait()
		e.add(job, 4, 6) // published while the subscription was down
		e.fh.failNext(3)
		e.b.confirmAll() // back: the refill's first read fails
		synctest.Wait()
		e.liveOne(job, 7) // live while the refill waits to read again
		synctest.Wait()
		if got := queuedIDs(current); len(got) != 0 {
			t.Errorf("events passed before the gap was refilled: %v", got)
		}
		notKicked(t, "behind", behind)
		notKicked(t, "current", current)

		time.Sleep(time.Second)
		synctest.Wait()
		notKicked(t, "behind", behind)
		notKicked(t, "current", current)
		if got, want := gotAfter(behind, 2), []uint64{3, 4, 5, 6, 7}; !slices.Equal(got, want) {
			t.Errorf("behind client got %v, want %v", got, want)
		}
		if got, want := gotAfter(current, 3), []uint64{4, 5, 6, 7}; !slices.Equal(got, want) {
			t.Errorf("current client got %v, want %v", got, want)
		}
		if n := e.fh.reads(); n != 4 {
			t.Errorf("%d refill reads, want 4 (3 failed, then the one that worked)", n)
		}
		if n := e.resyncErrors(); n != 3 {
			t.Errorf("redis_errors_total{op=resync} = %v, want 3 (one per failed read)", n)
		}

		e.liveOne(job, 8) // the refill is over: live events flow again
		synctest.Wait()
		if got := queuedIDs(current); !slices.Equal(got, []uint64{8}) {
			t.Errorf("after the refill the client got %v, want [8]", got)
		}
	})
}

// TestHubRefillGivesUp: a refill read that keeps failing past the retry
// budget closes the job's streams with redis_error and a retry hint, as
// before there were retries; they were sent nothing of the gap, so they
// resume from where they stood and get it then.
func TestHubRefillGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newRetryEnv(t)
		const job = "down"
		e.add(job, 1, 3)
		js, behind := e.joined(t, job, 2)
		_, current := e.joined(t, job, 3)

		e.b.fail()
		synctest.Wait()
		e.add(job, 4, 6)
		e.fh.failNext(-1) // Redis stays unreadable
		back := time.Now()
		e.b.confirmAll()
		synctest.Wait()
		e.liveOne(job, 7)

		for name, c := range map[string]*client{"behind": behind, "current": current} {
			for deadline := time.Now().Add(time.Minute); !c.gone.Load(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%s client still open a minute after the refill began failing", name)
				}
			}
			if c.kickReason != reasonRedis || c.kickRetry <= 0 {
				t.Errorf("%s client kicked as %q with retry %v, want %q with a retry hint", name, c.kickReason, c.kickRetry, reasonRedis)
			}
		}
		waited := time.Since(back)
		if waited < time.Second || waited > 10*time.Second {
			t.Errorf("streams closed %v after the refill began failing, want after a bounded retry (1 s to 10 s)", waited)
		}
		reads := e.fh.reads()
		if reads < 2 {
			t.Errorf("%d refill reads before giving up, want retries", reads)
		}
		if n := e.resyncErrors(); n != float64(reads) {
			t.Errorf("redis_errors_total{op=resync} = %v, want %d (one per failed read)", n, reads)
		}
		for name, c := range map[string]*client{"behind": behind, "current": current} {
			for _, ms := range queuedIDs(c) {
				if ms >= 4 && ms <= 6 {
					t.Errorf("%s client was sent %d of the gap the refill did not read", name, ms)
				}
				if ms == 7 {
					// A drain past its kicked check would write it, and the
					// client would resume after the gap it never got.
					t.Errorf("%s client was sent the live 7, past the gap the refill did not read", name)
				}
			}
		}

		// Redis is back: the streams resume through their Last-Event-IDs
		// and get the gap then.
		e.fh.failNext(0)
		for _, at := range []uint64{2, 3} {
			c := newClient(64, false)
			if _, err := e.h.join(context.Background(), job, c); err != nil {
				t.Fatalf("join again: %v", err)
			}
			s, err := e.h.start(context.Background(), js, c, true, protocol.ID{Ms: at})
			if err != nil {
				t.Fatalf("resume from %d: %v", at, err)
			}
			if got, want := historyIDs(s), span(at+1, 7); !slices.Equal(got, want) {
				t.Errorf("resume from %d replayed %v, want %v", at, got, want)
			}
		}
	})
}

// TestHubRefillRetryEndsWithHub: a refill waiting to read again gives up
// as soon as the hub stops, so run returns at once.
func TestHubRefillRetryEndsWithHub(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newRetryEnv(t)
		const job = "stop"
		e.add(job, 1, 1)
		e.joined(t, job, 1)
		e.b.fail()
		synctest.Wait()
		e.fh.failNext(-1)
		e.b.confirmAll()
		synctest.Wait()

		began := time.Now()
		e.stop()
		if waited := time.Since(began); waited != 0 {
			t.Errorf("the hub took %v to stop with a refill retrying, want no wait", waited)
		}
	})
}
