package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
)

// demoStepScale makes the demo's jobs take about 0.6 s (12 s at scale 1).
const demoStepScale = "0.05"

// stack is a real redis-server and a real gateway process in demo mode.
type stack struct {
	redis *redistest.Server
	gw    *gatewaytest.Gateway
	rdb   *redis.Client
}

// startStack starts redis-server and cmd/gateway with the demo on (it is off
// by default with a Redis URL) and fast demo jobs. Both stop when the test
// ends.
func startStack(t *testing.T) *stack {
	t.Helper()
	rs := redistest.Start(t)
	g := gatewaytest.Start(t, rs.URL(), gatewaytest.WithFlags("--demo", "on", "--demo-step-scale", demoStepScale))
	return &stack{redis: rs, gw: g, rdb: rs.Client(t)}
}

// entry is one event of a job's Redis stream.
type entry struct {
	ID   string
	Type string
}

// stream returns every event of job's stream: what was published, in order.
func (s *stack) stream(t *testing.T, job string) []entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := s.rdb.XRange(ctx, protocol.NewKeys("").Events(job), "-", "+").Result()
	if err != nil {
		t.Fatalf("e2e: XRANGE of %s: %v", job, err)
	}
	out := make([]entry, 0, len(msgs))
	for _, m := range msgs {
		typ, _ := m.Values["type"].(string)
		out = append(out, entry{ID: m.ID, Type: typ})
	}
	return out
}

// streamIDs returns the IDs of job's published events of the given type, or
// of every type when typ is "".
func (s *stack) streamIDs(t *testing.T, job, typ string) []string {
	t.Helper()
	var ids []string
	for _, e := range s.stream(t, job) {
		if typ == "" || e.Type == typ {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// countingProxy sits in front of a gateway and counts, per job, the stream
// requests that reach it and the status of each answer: an EventSource that
// reconnected after the terminal event would show up here, even as a 204
// that the gateway neither logs nor counts.
type countingProxy struct {
	URL string

	mu       sync.Mutex // guards requests, statuses
	requests map[string]int
	statuses map[string][]int
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingProxy{requests: map[string]int{}, statuses: map[string][]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		FlushInterval: -1, // pass each event on at once
		ModifyResponse: func(resp *http.Response) error {
			if job, ok := streamJob(resp.Request.URL.Path); ok {
				c.mu.Lock()
				c.statuses[job] = append(c.statuses[job], resp.StatusCode)
				c.mu.Unlock()
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if job, ok := streamJob(r.URL.Path); ok {
			c.mu.Lock()
			c.requests[job]++
			c.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// streamJob returns the job of a stream request path.
func streamJob(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/api/reports/")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "/stream")
}

// streamRequests returns how many stream requests of job reached the proxy
// and the status of each answer so far.
func (c *countingProxy) streamRequests(job string) (int, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests[job], append([]int(nil), c.statuses[job]...)
}
