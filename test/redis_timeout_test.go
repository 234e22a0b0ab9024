package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// A hung Redis (SIGSTOP: it accepts connections and answers nothing) must
// not hold requests longer than --redis-timeout: the snapshot, a stream of
// a job this gateway does not follow yet and /readyz each answer 503 well
// within a bound far below go-redis's 5 s defaults. When Redis continues,
// the gateway is ready again and streams live events.
func TestPausedRedisBoundedByRedisTimeout(t *testing.T) {
	t.Parallel()
	// 300ms per Redis call; the bound leaves room for a loaded 2-core
	// machine and is still far below the 5 s a call took when the flag
	// bounded nothing.
	const bound = 2 * time.Second
	c := newCluster(t, 1, nil, "--redis-timeout", "300ms", "--canary-interval", "200ms")
	g := c.gws[0]
	job, other := "paused-1", "paused-2"
	c.register(job, other)

	c.redis.Pause(t)
	timed := func(what, url string, header ...string) (int, string) {
		t.Helper()
		start := time.Now()
		st, body := status(url, header...)
		took := time.Since(start)
		t.Logf("%s with Redis paused: %d in %v: %s", what, st, took.Round(time.Millisecond), strings.TrimSpace(body))
		if took > bound {
			t.Errorf("%s took %v with Redis paused; want < %v (--redis-timeout 300ms)", what, took.Round(time.Millisecond), bound)
		}
		return st, body
	}
	if st, body := timed("snapshot", g.URL+"/api/reports/"+job); st != 503 || !strings.Contains(body, `"code":"REDIS_UNAVAILABLE"`) {
		t.Errorf("snapshot: %d %q; want 503 REDIS_UNAVAILABLE", st, body)
	}
	if st, body := timed("stream", g.URL+"/api/reports/"+other+"/stream", "Accept", "application/json"); st != 503 || !strings.Contains(body, `"code":"REDIS_UNAVAILABLE"`) {
		t.Errorf("stream: %d %q; want 503 REDIS_UNAVAILABLE", st, body)
	}
	if st, body := timed("readyz", g.URL+"/readyz"); st != 503 || !strings.Contains(body, `"code":"`) {
		t.Errorf("readyz: %d %q; want a 503 JSON error", st, body)
	}

	c.redis.Resume(t)
	streamtest.Eventually(t, "readyz back after Redis continued", func() bool {
		st, _ := status(g.URL + "/readyz")
		return st == 200
	})
	s := streamtest.Open(t, c.urls(job, 0), "")
	s.WaitEvents(t, 1) // the snapshot
	if _, err := c.pub.Job(job).Progress(context.Background(), publisher.Step{Step: 1, Total: 2, Name: "after the pause"}); err != nil {
		t.Fatal(err)
	}
	if evs := s.WaitEvents(t, 2); evs[1].Event != "progress" {
		t.Errorf("after the pause the stream got %s %q; want the progress event", evs[1].Event, evs[1].Data)
	}
}
