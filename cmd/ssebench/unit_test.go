package main

import (
	"encoding/csv"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	h := newHistogram(4)
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 200000)
	for i := range vals {
		// Log-uniform from 1µs to 10s: every bucket size gets exercised.
		vals[i] = int64(math.Exp(math.Log(1e3) + r.Float64()*(math.Log(1e10)-math.Log(1e3))))
		h.record(i, time.Duration(vals[i]))
	}
	slices.Sort(vals)
	s := h.snapshot()
	if s.n != uint64(len(vals)) || s.max != vals[len(vals)-1] {
		t.Fatalf("n %d, max %d; want %d, %d", s.n, s.max, len(vals), vals[len(vals)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := float64(vals[int(math.Ceil(q*float64(len(vals))))-1])
		got := float64(s.quantile(q))
		if math.Abs(got-exact)/exact > 0.01 {
			t.Errorf("q%v = %v, exact %v: off by more than 1%%", q, got, exact)
		}
	}
	if (histSnapshot{}).quantile(0.5) != 0 {
		t.Error("empty histogram quantile not 0")
	}
}

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	// Bucket indexes are monotonic and every value lies in its bucket.
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64} {
		b := bucketOf(v)
		if b < prev || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d after %d", v, b, prev)
		}
		prev = b
		mid := bucketMid(b)
		if v >= subBuckets && math.Abs(float64(mid-v))/float64(v) > 1.0/subBuckets {
			t.Errorf("value %d in bucket %d with midpoint %d", v, b, mid)
		}
	}
}

func TestStamp(t *testing.T) {
	t.Parallel()
	now := time.Unix(1764230400, 123456789)
	data := progressData("job-1", 3, stepName(now, strings.Repeat("x", 40)), now)
	got, ok := parseStamp(data)
	if !ok || got != now.UnixNano() {
		t.Fatalf("parseStamp(%s) = %d, %v; want %d", data, got, ok, now.UnixNano())
	}
	for _, bad := range []string{`{"currentStep":"Aggregating"}`, `{"currentStep":"t=;"}`, `{}`} {
		if _, ok := parseStamp([]byte(bad)); ok {
			t.Errorf("parseStamp(%s) found a stamp", bad)
		}
	}
	// Padding brings the data to about the asked size.
	pad := padding("job-1", 600)
	if n := len(progressData("job-1", 3, stepName(now, pad), now)); n < 580 || n > 620 {
		t.Errorf("padded event data is %d bytes, want about 600", n)
	}
}

func TestParseRedisInfo(t *testing.T) {
	t.Parallel()
	info := "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=200,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_publish:calls=12,usec=24,usec_per_call=2.00\r\ncmdstat_info:calls=3,usec=9\r\n" +
		"# CPU\r\nused_cpu_sys:1.50\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9\r\n"
	a := parseRedisInfo(info)
	a.OK = true
	if a.CPU != 3.75 || a.Cmds["evalsha"] != (cmdStat{10, 200}) || a.Cmds["publish"].Calls != 12 {
		t.Fatalf("parsed %+v", a)
	}
	b := parseRedisInfo(strings.ReplaceAll(strings.ReplaceAll(info, "calls=10,usec=200", "calls=30,usec=600"), "calls=3,", "calls=5,"))
	b.OK = true
	d := redisDelta(a, b, 20)
	if len(d) != 1 || d["evalsha"] != (CmdDelta{Calls: 20, Usec: 400, PerEvent: 1}) {
		t.Errorf("delta = %+v, want only evalsha (INFO is ours, publish did not move)", d)
	}
}

func TestParseMetrics(t *testing.T) {
	t.Parallel()
	m, err := parseMetrics(strings.NewReader("# HELP x\nprocess_resident_memory_bytes 1.2e+07\n" +
		"process_cpu_seconds_total 3.5\nssegate_connections_closed_total{reason=\"slow\"} 4\nssegate_slow_client_disconnects_total 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m["process_resident_memory_bytes"] != 1.2e7 || m["process_cpu_seconds_total"] != 3.5 || m["ssegate_slow_client_disconnects_total"] != 2 {
		t.Errorf("parsed %v", m)
	}
}

func TestCorrectnessFindsErrors(t *testing.T) {
	t.Parallel()
	cfg := &config{clients: 5, jobs: 1, jobPrefix: "j-"}
	b := newBench(cfg, os.Stderr)
	b.pubs = newPublishers(nil, 1, 1, &b.errs)
	ids := []protocol.ID{{Ms: 1}, {Ms: 2}, {Ms: 3}}
	for _, id := range ids {
		b.pubs.expect[0].count++
		b.pubs.expect[0].hash += idHash(id)
	}
	receive := func(st *clientState, seq ...protocol.ID) {
		for _, id := range seq {
			switch {
			case id == st.last:
				st.dups++
			case id.Less(st.last):
				st.ooo++
			default:
				st.last, st.accepted, st.hash = id, st.accepted+1, st.hash+idHash(id)
			}
		}
		st.finished = true
	}
	receive(&b.st[0], ids...)                                     // exact
	receive(&b.st[1], ids[0], ids[2])                             // lost one
	receive(&b.st[2], ids[0], ids[1], ids[1], ids[2])             // a duplicate
	receive(&b.st[3], ids[0], ids[2], ids[1])                     // out of order
	receive(&b.st[4], ids[0], ids[1], protocol.ID{Ms: 2, Seq: 1}) // wrong event
	var res Result
	b.correctness(&res)
	k := res.Correctness
	if k.Lost != 1 || k.Duplicated != 1 || k.OutOfOrder != 1 || k.Mismatched != 1 || k.Extra != 0 {
		t.Errorf("correctness = %+v, want 1 lost, 1 duplicated, 1 out of order, 1 mismatched", k)
	}
	if len(k.Jobs) != 1 || k.Jobs[0].Job != "j-0" {
		t.Errorf("per-job errors = %+v", k.Jobs)
	}
}

func TestCSVAppends(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "runs.csv")
	r := &Result{Tool: "ssebench", Mode: "floor", Clients: 10, Errors: []string{"a, b"}}
	r.Latency.P99Ms = 1.5
	for range 2 {
		if err := appendCSV(path, r); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want a header and 2 rows", len(rows))
	}
	col := func(name string) string {
		i := slices.Index(rows[0], name)
		if i < 0 {
			t.Fatalf("no column %q in %v", name, rows[0])
		}
		return rows[1][i]
	}
	if col("clients") != "10" || col("latency_p99_ms") != "1.5" || col("mode") != "floor" || col("problems") != "a, b" {
		t.Errorf("row = %v", rows[1])
	}
}

func TestFloorReadRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		req    string
		job    string
		resume bool
		id     protocol.ID
		bad    bool
	}{
		{"plain", "GET /api/reports/j-1/stream?timeout=10m HTTP/1.1\r\nHost: x\r\n\r\n", "j-1", false, protocol.ID{}, false},
		{"resume", "GET /api/reports/j-2/stream HTTP/1.1\r\nlast-event-id: 17-3\r\n\r\n", "j-2", true, protocol.ID{Ms: 17, Seq: 3}, false},
		{"bad path", "GET /metrics HTTP/1.1\r\n\r\n", "", false, protocol.ID{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			server, client := net.Pipe()
			defer server.Close()
			go func() { _, _ = client.Write([]byte(tt.req)); client.Close() }()
			job, id, resume, err := readRequest(server)
			if tt.bad {
				if err == nil {
					t.Errorf("accepted %q", tt.req)
				}
				return
			}
			if err != nil || job != tt.job || resume != tt.resume || id != tt.id {
				t.Errorf("got %q %v %v %v", job, id, resume, err)
			}
		})
	}
}

func TestShardDeltas(t *testing.T) {
	t.Parallel()
	snap := func(cpu, evalsha, spublish, ssubscribe float64) redisSnap {
		return redisSnap{OK: true, CPU: cpu, Cmds: map[string]cmdStat{
			"evalsha": {Calls: evalsha, Usec: 10 * evalsha}, "spublish": {Calls: spublish}, "ssubscribe": {Calls: ssubscribe},
			"info": {Calls: cpu}, // ssebench's own readings: never counted
		}}
	}
	cluster := func(shards map[string]redisSnap) redisSnap {
		sum := redisSnap{OK: true, Cmds: map[string]cmdStat{}, Shards: shards}
		for _, s := range shards {
			sum.CPU += s.CPU
			for n, c := range s.Cmds {
				t := sum.Cmds[n]
				t.Calls += c.Calls
				t.Usec += c.Usec
				sum.Cmds[n] = t
			}
		}
		return sum
	}
	const a, b, c = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
	sm := &samples{
		redisEmpty:     cluster(map[string]redisSnap{a: snap(1, 0, 0, 0), b: snap(2, 0, 0, 0), c: snap(3, 0, 0, 0)}),
		redisConnected: cluster(map[string]redisSnap{a: snap(1.5, 0, 0, 700), b: snap(2.25, 0, 0, 660), c: snap(3, 0, 0, 640)}),
		redisLoad0:     cluster(map[string]redisSnap{a: snap(2, 10, 11, 700), b: snap(3, 10, 11, 660), c: snap(4, 10, 11, 640)}),
		// c left the cluster in the window: no load figures for it.
		redisLoad1: cluster(map[string]redisSnap{a: snap(6, 410, 416, 700), b: snap(5.5, 310, 314, 660)}),
	}
	got := shardDeltas(sm, 1000)
	if len(got) != 3 {
		t.Fatalf("shards %v, want 3", slices.Sorted(maps.Keys(got)))
	}
	want := map[string]ShardResult{
		a: {ConnectCPUS: 0.5, LoadCPUS: 4, Connect: map[string]CmdDelta{"ssubscribe": {Calls: 700}},
			Load: map[string]CmdDelta{"evalsha": {Calls: 400, Usec: 4000, PerEvent: 0.4}, "spublish": {Calls: 405, PerEvent: 0.405}}},
		b: {ConnectCPUS: 0.25, LoadCPUS: 2.5, Connect: map[string]CmdDelta{"ssubscribe": {Calls: 660}},
			Load: map[string]CmdDelta{"evalsha": {Calls: 300, Usec: 3000, PerEvent: 0.3}, "spublish": {Calls: 303, PerEvent: 0.303}}},
		c: {ConnectCPUS: 0, Connect: map[string]CmdDelta{"ssubscribe": {Calls: 640}}},
	}
	for addr, w := range want {
		g := got[addr]
		if g == nil || math.Abs(g.ConnectCPUS-w.ConnectCPUS) > 1e-9 || math.Abs(g.LoadCPUS-w.LoadCPUS) > 1e-9 ||
			!maps.Equal(g.Connect, w.Connect) || !maps.Equal(g.Load, w.Load) {
			t.Errorf("shard %s = %+v, want %+v", addr, g, w)
		}
	}
	// With every shard in both readings, the shards' figures add up to
	// the totals.
	whole := *sm
	whole.redisLoad1 = cluster(map[string]redisSnap{a: snap(6, 410, 416, 700), b: snap(5.5, 310, 314, 660), c: snap(4.5, 310, 311, 640)})
	total := redisDelta(whole.redisLoad0, whole.redisLoad1, 1000)
	var perEvent, cpu float64
	for _, sh := range shardDeltas(&whole, 1000) {
		perEvent += sh.Load["evalsha"].PerEvent
		cpu += sh.LoadCPUS
	}
	if math.Abs(perEvent-total["evalsha"].PerEvent) > 1e-9 || math.Abs(perEvent-1) > 1e-9 || cpu != whole.redisLoad1.CPU-whole.redisLoad0.CPU {
		t.Errorf("shards sum to %v evalsha per event and %v CPU-s; totals %v and %v",
			perEvent, cpu, total["evalsha"].PerEvent, whole.redisLoad1.CPU-whole.redisLoad0.CPU)
	}

	// A single server has no shards, and no load window no load figures.
	single := &samples{redisEmpty: snap(1, 0, 0, 0), redisConnected: snap(2, 0, 0, 5), redisLoad0: snap(2, 0, 0, 5), redisLoad1: snap(3, 9, 9, 5)}
	if got := shardDeltas(single, 9); got != nil {
		t.Errorf("single server: shards %v", got)
	}
	idle := *sm
	idle.redisLoad0, idle.redisLoad1 = redisSnap{}, redisSnap{}
	for addr, sh := range shardDeltas(&idle, 0) {
		if sh.LoadCPUS != 0 || sh.Load != nil {
			t.Errorf("no load window, shard %s: %+v", addr, sh)
		}
	}
}

func TestTableShardLines(t *testing.T) {
	t.Parallel()
	r := &Result{Mode: "gateway", Gateways: 2}
	r.Publish.WindowS = 30
	r.Redis = &RedisResult{LoadCPUS: 3, Load: map[string]CmdDelta{"evalsha": {Calls: 900, PerEvent: 1}}}
	var single strings.Builder
	writeTable(&single, r)
	if strings.Contains(single.String(), "shard") {
		t.Errorf("single-server table has shard lines:\n%s", single.String())
	}
	r.Redis.Shards = map[string]*ShardResult{
		"127.0.0.1:7002": {LoadCPUS: 1.25, ConnectCPUS: 0.5, Load: map[string]CmdDelta{"evalsha": {Calls: 300, PerEvent: 0.3333}}},
		"127.0.0.1:7001": {LoadCPUS: 1.75, Load: map[string]CmdDelta{"evalsha": {Calls: 600, PerEvent: 0.6667}}},
	}
	var cl strings.Builder
	writeTable(&cl, r)
	out := cl.String()
	l1 := "  shard        127.0.0.1:7001: CPU 1.75s in the load window, 0.00s connecting; load calls: evalsha 600 (0.67/event)\n"
	l2 := "  shard        127.0.0.1:7002: CPU 1.25s in the load window, 0.50s connecting; load calls: evalsha 300 (0.33/event)\n"
	i1, i2 := strings.Index(out, l1), strings.Index(out, l2)
	if i1 < 0 || i2 < i1 {
		t.Errorf("want the shard lines, in address order:\n%s%s\ngot:\n%s", l1, l2, out)
	}
	if rest := strings.Replace(strings.Replace(out, l1, "", 1), l2, "", 1); rest != single.String() {
		t.Errorf("the shard lines changed the rest of the table:\n%s\nwant:\n%s", rest, single.String())
	}
}

func TestGatewayOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ clients, jobs, gateways int }{{10000, 1000, 2}, {2000, 1, 2}, {999, 999, 3}, {10, 100, 2}, {30, 3, 3}} {
		c := &config{jobs: tt.jobs, gateways: make([]string, tt.gateways)}
		onGateway := make([]int, tt.gateways)
		jobOn := map[int]map[int]bool{} // job -> gateways
		for i := range tt.clients {
			plain := c.gatewayOf(i)
			c.spreadJobs = true
			g := c.gatewayOf(i)
			c.spreadJobs = false
			if plain != i%tt.gateways {
				t.Fatalf("%+v: client %d on gateway %d without --spread-jobs", tt, i, plain)
			}
			onGateway[g]++
			if jobOn[i%tt.jobs] == nil {
				jobOn[i%tt.jobs] = map[int]bool{}
			}
			jobOn[i%tt.jobs][g] = true
		}
		if slices.Max(onGateway)-slices.Min(onGateway) > tt.clients/tt.jobs+1 {
			t.Errorf("%+v: clients per gateway %v", tt, onGateway)
		}
		for j, gs := range jobOn {
			if want := min(tt.gateways, (tt.clients-j+tt.jobs-1)/tt.jobs); len(gs) != want {
				t.Errorf("%+v: job %d on %d gateways, want %d", tt, j, len(gs), want)
			}
		}
	}
}
