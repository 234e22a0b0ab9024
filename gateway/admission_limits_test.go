package gateway_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/test/streamtest"
)

// retryHint returns the retry: of a body, or 0.
func retryHint(body string) time.Duration {
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, "retry: "); ok {
			ms, _ := strconv.Atoi(v)
			return time.Duration(ms) * time.Millisecond
		}
	}
	return 0
}

// TestLimitsRefuseOnlyStreamsThatStayOpen: at the instance's connection
// limit, a finished job still gets its terminal event and an unknown job
// its 404; only a stream that would stay open is refused. Refused clients
// are told to come back later the more are refused.
func TestLimitsRefuseOnlyStreamsThatStayOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxConnections = 1
	cfg.Retry = 100 * time.Millisecond
	g := e.gateway(cfg)
	ok := must(t)
	ctx := context.Background()
	ok(e.pub.Job("open").Register(ctx))
	ok(e.pub.Job("running").Register(ctx))
	ok(e.pub.Job("done").Register(ctx))
	ok(e.pub.Job("done").Complete(ctx, "r", nil))
	s := streamtest.Open(t, []string{g.streamURL("open")}, "")
	s.WaitEvents(t, 1)

	if status, _, body := rawGet(t, g.streamURL("done"), "Accept", "text/event-stream"); status != 200 || !strings.Contains(body, "event: complete") {
		t.Errorf("finished job at the limit: %d %q, want its complete event", status, body)
	}
	if status, _, _ := rawGet(t, g.streamURL("nope"), "Accept", "text/event-stream"); status != http.StatusNotFound {
		t.Errorf("unknown job at the limit: %d, want 404", status)
	}
	// The refusals are counted per second of the clock: a run that
	// crosses into the next second starts counting again, so the longest
	// hint of the run is the one that shows the growth.
	var first, longest time.Duration
	for i := range 40 {
		status, _, body := rawGet(t, g.streamURL("running"), "Accept", "text/event-stream")
		if status != 200 || !strings.Contains(body, ": connection_limit") {
			t.Fatalf("running job at the limit: %d %q, want a retry-only refusal", status, body)
		}
		if i == 0 {
			first = retryHint(body)
		}
		longest = max(longest, retryHint(body))
	}
	if first < cfg.Retry || first >= 2*cfg.Retry {
		t.Errorf("first refusal's retry %v, want the jittered base [%v, %v)", first, cfg.Retry, 2*cfg.Retry)
	}
	if longest < 4*cfg.Retry {
		t.Errorf("over 40 refusals in a row the longest retry is %v, want it grown well past the base %v", longest, cfg.Retry)
	}
}
