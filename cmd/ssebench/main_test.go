package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
)

// TestMain lets the test binary be the floor server: ssebench floor starts
// its own executable with floorChildEnv set, which here is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(floorChildEnv) == "1" {
		os.Exit(floorServerMain(floorArgs(os.Args[1:]), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runJSON runs ssebench with args plus --json and returns its result.
func runJSON(t *testing.T, args ...string) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args = append(args, "--json", "--progress", "0", "--settle", "200ms", "--drain", "10s")
	code := run(ctx, args, &stdout, &stderr)
	t.Logf("ssebench %s:\n%s", strings.Join(args, " "), stderr.String())
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("exit %d; stdout is not one JSON result: %v\n%s", code, err, stdout.String())
	}
	if lines := strings.Count(strings.TrimSpace(stdout.String()), "\n"); lines != 0 {
		t.Errorf("stdout has %d lines, want one JSON line", lines+1)
	}
	if code != 0 || !res.OK {
		t.Fatalf("exit %d, ok %v, problems %q", code, res.OK, res.Errors)
	}
	return &res
}

// checkExact asserts that every client got exactly what was published for
// its job, want events over all clients.
func checkExact(t *testing.T, res *Result, clients int, want uint64) {
	t.Helper()
	k := res.Correctness
	if k.Lost+k.Duplicated+k.OutOfOrder+k.Extra+k.Mismatched+k.Unfinished+k.Foreign != 0 {
		t.Errorf("correctness = %+v, want all zero", k)
	}
	if k.Expected != want || k.Received != want {
		t.Errorf("expected %d, received %d events, want %d", k.Expected, k.Received, want)
	}
	if res.Connect.Connected != clients || res.Connect.Failed != 0 {
		t.Errorf("connected %d, failed %d, want %d, 0", res.Connect.Connected, res.Connect.Failed, clients)
	}
}

func startGateways(t *testing.T, n int) (redisURL string, urls []string, real bool) {
	t.Helper()
	r := redistest.Start(t)
	for range n {
		g := gatewaytest.Start(t, r.URL(), gatewaytest.WithFlags(
			"--max-connections", "0", "--max-connections-per-job", "0", "--log-level", "info", "--heartbeat", "100ms"))
		urls = append(urls, g.URL)
	}
	return r.URL(), urls, r.Real()
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		floor    bool
		gateways int
	}{
		{"gateway", false, 1},
		{"two gateways on one Redis", false, 2},
		{"floor", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"run"}
			realRedis := false
			if tt.floor {
				args = []string{"floor", "--heartbeat", "100ms"}
			} else {
				redisURL, urls, real := startGateways(t, tt.gateways)
				realRedis = real
				args = append(args, "--redis-url", redisURL, "--gateway", strings.Join(urls, ","))
			}
			args = append(args, "--clients", "20", "--jobs", "2", "--rate", "100", "--duration", "1s", "--warmup", "200ms")
			res := runJSON(t, args...)

			// Every event published (warmup included) went to the 10
			// clients of its job, exactly once and in order.
			if res.Publish.Total < 50 || res.Publish.Events < 50 {
				t.Fatalf("published %d (%d in the window), want about 120", res.Publish.Total, res.Publish.Events)
			}
			checkExact(t, res, 20, 10*uint64(res.Publish.Total))
			if res.Latency.Count == 0 || res.Latency.Count > uint64(res.Publish.Events+1)*10 {
				t.Errorf("latency samples %d for %d events in the window", res.Latency.Count, res.Publish.Events)
			}
			if res.Delivery.Deliveries == 0 || res.Delivery.PerSec <= 0 {
				t.Errorf("deliveries %d (%v/s)", res.Delivery.Deliveries, res.Delivery.PerSec)
			}
			wantSource, wantMode, wantGateways := "metrics", "gateway", tt.gateways
			if tt.floor {
				wantSource, wantMode, wantGateways = "proc", "floor", 1
			}
			if res.Mode != wantMode || res.Gateways != wantGateways || res.Server.Source != wantSource {
				t.Errorf("mode %q, gateways %d, server source %q; want %q, %d, %q",
					res.Mode, res.Gateways, res.Server.Source, wantMode, wantGateways, wantSource)
			}
			if res.Server.RSSIdleMB <= 0 || res.Server.LoadCPUS < 0 {
				t.Errorf("server figures missing: %+v", res.Server)
			}
			if realRedis {
				if res.Redis == nil || res.Redis.Load["evalsha"].Calls == 0 {
					t.Errorf("no Redis command counts: %+v", res.Redis)
				}
			}
		})
	}
}

func TestResumeFromMiddle(t *testing.T) {
	t.Parallel()
	for _, floor := range []bool{false, true} {
		name := "gateway"
		if floor {
			name = "floor"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := []string{"floor"}
			if !floor {
				redisURL, urls, _ := startGateways(t, 1)
				args = []string{"run", "--redis-url", redisURL, "--gateway", urls[0]}
			}
			// 11 events per job: resume after the 5th, get exactly the
			// last 6, in order; nothing live.
			res := runJSON(t, append(args, "--clients", "20", "--jobs", "2", "--resume-from-middle", "11",
				"--rate", "0", "--duration", "0s")...)
			checkExact(t, res, 20, 20*6)
			if res.Connect.Replayed != 20 || res.Connect.ReplayEvents != 6 {
				t.Errorf("replayed %d clients of %d events, want 20 of 6", res.Connect.Replayed, res.Connect.ReplayEvents)
			}
			if res.Publish.Total != 22 {
				t.Errorf("published %d, want 22", res.Publish.Total)
			}
		})
	}
}

func TestIdle(t *testing.T) {
	t.Parallel()
	redisURL, urls, _ := startGateways(t, 1)
	res := runJSON(t, "--redis-url", redisURL, "--gateway", urls[0], "--clients", "20", "--jobs", "3", "--idle", "--duration", "300ms")
	checkExact(t, res, 20, 0)
	if res.Publish.WindowS != 0 || res.Publish.Total != 0 {
		t.Errorf("idle run published: %+v", res.Publish)
	}
	if res.Server.IdleWindowS < 0.25 {
		t.Errorf("idle window %vs, want the --duration", res.Server.IdleWindowS)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"help", []string{"--help"}, 0},
		{"floor help", []string{"floor", "--help"}, 0},
		{"no clients", []string{"--clients", "0"}, 2},
		{"bad gateway", []string{"--gateway", "ftp://x"}, 2},
		{"one event to resume", []string{"--resume-from-middle", "1"}, 2},
		{"pid for floor", []string{"floor", "--gateway-pid", "1"}, 2},
		{"pids do not match gateways", []string{"--gateway", "a:1,b:2", "--gateway-pid", "1"}, 2},
		{"stray argument", []string{"run", "extra"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &out); code != tt.code {
				t.Errorf("exit %d, want %d:\n%s", code, tt.code, out.String())
			}
		})
	}
}
