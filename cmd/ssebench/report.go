package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Result is everything one run measured. It is printed as one JSON line
// (--json) and flattened into one CSV row (--csv). Durations are in the
// unit their name says; -1 means "could not be measured".
type Result struct {
	Tool   string    `json:"tool"`
	Mode   string    `json:"mode"` // "gateway" or "floor"
	Label  string    `json:"label"`
	Start  time.Time `json:"start"`
	OK     bool      `json:"ok"` // every event reached every client exactly once, in order
	Errors []string  `json:"problems,omitempty"`

	Clients          int     `json:"clients"`
	Jobs             int     `json:"jobs"`
	Gateways         int     `json:"gateways"`
	TargetRate       float64 `json:"target_rate"`
	DurationS        float64 `json:"duration_s"`
	WarmupS          float64 `json:"warmup_s"`
	Payload          int     `json:"payload"`
	EventBytes       int     `json:"event_bytes"` // bytes of one progress event on the wire (about)
	ResumeFromMiddle int     `json:"resume_from_middle"`
	Idle             bool    `json:"idle"`
	NoFileLimit      uint64  `json:"nofile_limit"`
	Cores            int     `json:"cores"`

	Connect     ConnectResult     `json:"connect"`
	Publish     PublishResult     `json:"publish"`
	Delivery    DeliveryResult    `json:"delivery"`
	Latency     LatencyResult     `json:"latency"`
	Correctness CorrectnessResult `json:"correctness"`
	Server      ServerResult      `json:"server"`
	Self        SelfResult        `json:"self"`
	Machine     MachineResult     `json:"machine"`
	Redis       *RedisResult      `json:"redis,omitempty"`
}

// ConnectResult is the connect phase. A client counts as connected at its
// first event (the snapshot, or the first replayed event): by then the
// gateway has joined it to its job's live feed.
type ConnectResult struct {
	Connected     int     `json:"connected"`
	Failed        int     `json:"failed"`      // gave up on a permanent HTTP error
	Unconnected   int     `json:"unconnected"` // neither connected nor failed in time
	TimedOut      bool    `json:"timed_out"`   // not everyone connected within --connect-timeout
	Errors        int64   `json:"errors"`      // failed attempts that were retried
	Refused       int64   `json:"refused"`     // 200 streams closed before their first event (transient refusals), retried
	Reconnects    int64   `json:"reconnects"`  // streams resumed after one ended early (whole run)
	AllS          float64 `json:"all_s"`       // start of the phase -> every client's first event
	RateAsked     float64 `json:"rate_asked"`  // --connect-rate (0: all at once)
	RateAchieved  float64 `json:"rate"`        // connected / all_s
	P50Ms         float64 `json:"p50_ms"`      // one client: request -> first event
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
	ReplayEvents  uint64  `json:"replay_events"` // per client, with --resume-from-middle
	Replayed      int     `json:"replayed"`      // clients that got their whole replay
	ReplayAllS    float64 `json:"replay_all_s"`  // start of the phase -> every replay complete
	ReconnectsMax uint32  `json:"reconnects_max"`
}

// PublishResult is the publishing side in the measured window.
type PublishResult struct {
	Events   int64   `json:"events"`   // published in the window
	Rate     float64 `json:"rate"`     // achieved events/s
	Total    int64   `json:"total"`    // published over the whole run (warmup and history included)
	Errors   int64   `json:"errors"`   // failed publishes (the run is not OK)
	WindowS  float64 `json:"window_s"` // measured window, seconds
	PerJobHz float64 `json:"per_job_rate"`
}

// DeliveryResult counts events received in the measured window.
type DeliveryResult struct {
	Deliveries int64   `json:"deliveries"`
	PerSec     float64 `json:"per_sec"`
	Expected   int64   `json:"expected"` // events published in the window x their job's clients
	DrainS     float64 `json:"drain_s"`  // terminal events sent -> every client finished
}

// LatencyResult is publish -> client parsed, over events published in the
// measured window, with about ±0.4% resolution.
type LatencyResult struct {
	Count  uint64  `json:"count"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// CorrectnessResult compares what each client received with what was
// published for its job (everything after it connected, or after its
// Last-Event-ID). All counts must be 0.
type CorrectnessResult struct {
	Expected   uint64      `json:"expected"` // sum over clients of the events each must get
	Received   uint64      `json:"received"` // sum over clients of events received in order
	Lost       uint64      `json:"lost"`
	Duplicated uint64      `json:"duplicated"`
	OutOfOrder uint64      `json:"out_of_order"`
	Extra      uint64      `json:"extra"`      // more events than were published
	Mismatched uint64      `json:"mismatched"` // right count, wrong events
	Resets     uint64      `json:"resets"`
	Foreign    uint64      `json:"foreign"`    // progress events not published by this run
	Unfinished uint64      `json:"unfinished"` // clients that never got their job's terminal event
	Jobs       []JobErrors `json:"jobs,omitempty"`
}

// JobErrors are the nonzero counts of one job (the first 20 such jobs).
type JobErrors struct {
	Job        string `json:"job"`
	Lost       uint64 `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	OutOfOrder uint64 `json:"out_of_order"`
	Extra      uint64 `json:"extra"`
	Mismatched uint64 `json:"mismatched"`
}

// ServerResult is the server under test: the gateways (summed) or the floor
// server.
type ServerResult struct {
	Source              string  `json:"source"` // proc, metrics or none
	RSSEmptyMB          float64 `json:"rss_empty_mb"`
	RSSIdleMB           float64 `json:"rss_idle_mb"`
	RSSLoadMB           float64 `json:"rss_load_mb"`
	RSSPerConnKB        float64 `json:"rss_per_conn_kb"`   // (idle - empty) / connections
	GoMemPerConnKB      float64 `json:"gomem_per_conn_kb"` // the same for Go heap + stacks in use (gateways' /metrics); -1: unknown
	ConnectCPUS         float64 `json:"connect_cpu_s"`     // over the connect phase (replays included)
	ConnectCPUPerConnMs float64 `json:"connect_cpu_per_conn_ms"`
	IdleCPUPct          float64 `json:"idle_cpu_pct"` // 100 = one core
	IdleWindowS         float64 `json:"idle_window_s"`
	LoadCPUS            float64 `json:"load_cpu_s"`
	LoadCPUPct          float64 `json:"load_cpu_pct"`
	CPUPer100kS         float64 `json:"cpu_per_100k_deliveries_s"`
	SlowDisconnects     float64 `json:"slow_disconnects"`
	OpenFileLimitSoft   int64   `json:"nofile_limit"` // of the (first) server process, when known
}

// SelfResult is ssebench's own cost, so a saturated load generator shows.
type SelfResult struct {
	LoadCPUPct  float64 `json:"load_cpu_pct"` // 100 = one core
	IdleCPUPct  float64 `json:"idle_cpu_pct"`
	ConnectCPUS float64 `json:"connect_cpu_s"`
	CPUS        float64 `json:"cpu_s"` // whole run
	RSSMB       float64 `json:"rss_mb"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	Saturated   bool    `json:"saturated"` // over 90% of the cores in the load window
}

// MachineResult is the whole machine in the load window (from /proc/stat).
type MachineResult struct {
	LoadBusyPct float64 `json:"load_busy_pct"` // 100 = every core busy
}

// RedisResult is the Redis server's work (gateway runs on real Redis).
type RedisResult struct {
	ConnectCPUS float64             `json:"connect_cpu_s"`
	LoadCPUS    float64             `json:"load_cpu_s"`
	Connect     map[string]CmdDelta `json:"connect_commands"` // connect phase
	Load        map[string]CmdDelta `json:"load_commands"`    // measured window, with per-event calls
	// Shards is each Redis Cluster master's own share, by address (none on
	// a single server). The figures above are their sums.
	Shards map[string]*ShardResult `json:"shards,omitempty"`
}

// ShardResult is one Cluster master's work. Its per-event figures divide
// its own calls by every event published in the window (on all masters),
// so the shards' figures add up to the totals.
type ShardResult struct {
	ConnectCPUS float64             `json:"connect_cpu_s"`
	LoadCPUS    float64             `json:"cpu_seconds"` // measured window
	Connect     map[string]CmdDelta `json:"connect_commands,omitempty"`
	Load        map[string]CmdDelta `json:"commands,omitempty"` // measured window, with per-event calls
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// roundFloats rounds every float field of v (a pointer to a struct, nested
// structs included) to 4 decimals, so the JSON and CSV stay readable; the
// measurements are not that exact anyway.
func roundFloats(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			roundFloats(v.Elem())
		}
	case reflect.Struct:
		if _, ok := v.Interface().(time.Time); ok {
			return
		}
		for i := range v.NumField() {
			roundFloats(v.Field(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			roundFloats(e)
			v.SetMapIndex(k, e)
		}
	case reflect.Float64:
		if v.CanSet() {
			v.SetFloat(math.Round(v.Float()*1e4) / 1e4)
		}
	}
}

// writeTable prints the human summary.
func writeTable(w io.Writer, r *Result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	what := fmt.Sprintf("%d gateway(s)", r.Gateways)
	if r.Mode == "floor" {
		what = "the floor server"
	}
	p("ssebench %s%s: %d clients over %d jobs on %s", r.Mode, labelSuffix(r.Label), r.Clients, r.Jobs, what)
	c := r.Connect
	p("  connect      %d/%d connected in %.2fs (per client p50 %.1fms, p99 %.1fms, max %.1fms); %d failed, %d errors, %d refused, %d resumed streams",
		c.Connected, r.Clients, c.AllS, c.P50Ms, c.P99Ms, c.MaxMs, c.Failed, c.Errors, c.Refused, c.Reconnects)
	if r.ResumeFromMiddle > 0 {
		p("  replay       %d/%d clients got their %d-event replay; all in %.2fs", c.Replayed, r.Clients, c.ReplayEvents, c.ReplayAllS)
	}
	if r.Publish.WindowS > 0 {
		p("  publish      %d events in %.1fs = %.1f/s (asked %.1f/s), %d errors; %d bytes each on the wire",
			r.Publish.Events, r.Publish.WindowS, r.Publish.Rate, r.TargetRate, r.Publish.Errors, r.EventBytes)
		p("  deliveries   %d = %.0f/s (expected about %d)", r.Delivery.Deliveries, r.Delivery.PerSec, r.Delivery.Expected)
		l := r.Latency
		p("  latency      p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  (mean %.2fms, n=%d)",
			l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms, l.MaxMs, l.MeanMs, l.Count)
	} else {
		p("  publish      no load window (streams held %.1fs)", r.Server.IdleWindowS)
	}
	k := r.Correctness
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	p("  correctness  lost %d  duplicated %d  out-of-order %d  extra %d  mismatched %d  unfinished %d  (%d of %d events)  %s",
		k.Lost, k.Duplicated, k.OutOfOrder, k.Extra, k.Mismatched, k.Unfinished, k.Received, k.Expected, verdict)
	for _, j := range k.Jobs {
		p("               job %s: lost %d dup %d ooo %d extra %d mismatched %d", j.Job, j.Lost, j.Duplicated, j.OutOfOrder, j.Extra, j.Mismatched)
	}
	s := r.Server
	name := "gateway"
	if r.Mode == "floor" {
		name = "floor"
	}
	if s.Source == "none" {
		p("  %-12s RSS/CPU unavailable (no --gateway-pid and no /metrics process collectors)", name)
	} else {
		gomem := ""
		if s.GoMemPerConnKB >= 0 {
			gomem = fmt.Sprintf(" (Go heap+stacks %.1f KiB)", s.GoMemPerConnKB)
		}
		p("  %-12s RSS empty %.1f MiB, idle %.1f MiB, load %.1f MiB: %.1f KiB per connection%s  [%s]",
			name, s.RSSEmptyMB, s.RSSIdleMB, s.RSSLoadMB, s.RSSPerConnKB, gomem, s.Source)
		p("               CPU connecting %.2fs (%.2fms per connection), idle %.2f%% over %.1fs",
			s.ConnectCPUS, s.ConnectCPUPerConnMs, s.IdleCPUPct, s.IdleWindowS)
		if r.Publish.WindowS > 0 {
			p("               CPU load %.1f%% (%.2fs): %.3fs per 100k deliveries; %.0f slow-client cuts",
				s.LoadCPUPct, s.LoadCPUS, s.CPUPer100kS, s.SlowDisconnects)
		}
	}
	sat := ""
	if r.Self.Saturated {
		sat = "  SATURATED: the load generator limits these numbers"
	}
	load := ""
	if r.Publish.WindowS > 0 {
		load = fmt.Sprintf("load %.1f%%, ", r.Self.LoadCPUPct)
	}
	p("  ssebench     CPU %sidle %.1f%%, connecting %.2fs (100%% = one core, %d cores); RSS %.1f MiB (peak %.1f)%s",
		load, r.Self.IdleCPUPct, r.Self.ConnectCPUS, r.Cores, r.Self.RSSMB, r.Self.PeakRSSMB, sat)
	if r.Publish.WindowS > 0 {
		p("  machine      %.0f%% busy in the load window", r.Machine.LoadBusyPct)
	}
	if r.Redis != nil {
		if r.Publish.WindowS > 0 {
			p("  redis        CPU %.2fs in the load window, %.2fs connecting", r.Redis.LoadCPUS, r.Redis.ConnectCPUS)
		} else {
			p("  redis        CPU %.2fs connecting", r.Redis.ConnectCPUS)
		}
		if len(r.Redis.Load) > 0 {
			p("               load calls: %s", loadCalls(r.Redis.Load))
		}
		if len(r.Redis.Connect) > 0 {
			p("               connect calls: %s", connectCalls(r.Redis.Connect))
		}
		for _, addr := range sortedShards(r.Redis.Shards) {
			sh := r.Redis.Shards[addr]
			line := fmt.Sprintf("  shard        %s: CPU %.2fs in the load window, %.2fs connecting", addr, sh.LoadCPUS, sh.ConnectCPUS)
			if r.Publish.WindowS <= 0 {
				line = fmt.Sprintf("  shard        %s: CPU %.2fs connecting", addr, sh.ConnectCPUS)
			}
			if len(sh.Load) > 0 {
				line += "; load calls: " + loadCalls(sh.Load)
			}
			if len(sh.Connect) > 0 {
				line += "; connect calls: " + connectCalls(sh.Connect)
			}
			p("%s", line)
		}
	}
	for _, e := range r.Errors {
		p("  problem      %s", e)
	}
}

// loadCalls is "name calls (per event/event), ..." by calls, most first.
func loadCalls(m map[string]CmdDelta) string {
	var parts []string
	for _, n := range sortedCommands(m) {
		d := m[n]
		parts = append(parts, fmt.Sprintf("%s %.0f (%.2f/event)", n, d.Calls, d.PerEvent))
	}
	return strings.Join(parts, ", ")
}

// connectCalls is "name calls, ..." by calls, most first.
func connectCalls(m map[string]CmdDelta) string {
	var parts []string
	for _, n := range sortedCommands(m) {
		parts = append(parts, fmt.Sprintf("%s %.0f", n, m[n].Calls))
	}
	return strings.Join(parts, ", ")
}

func labelSuffix(l string) string {
	if l == "" {
		return ""
	}
	return " [" + l + "]"
}

// csvRow flattens r: every scalar field by its JSON path joined with "_",
// then calls per event of a fixed list of Redis commands.
func csvRow(r *Result) (header, row []string) {
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" || tag == "" {
				continue
			}
			name := prefix + tag
			fv := v.Field(i)
			switch fv.Kind() {
			case reflect.Struct:
				if tm, ok := fv.Interface().(time.Time); ok {
					header, row = append(header, name), append(row, tm.UTC().Format(time.RFC3339))
					continue
				}
				walk(name+"_", fv)
			case reflect.Slice, reflect.Map, reflect.Pointer:
				// problems and per-job lists go to the JSON only
			case reflect.Float64:
				header, row = append(header, name), append(row, strconv.FormatFloat(fv.Float(), 'g', 10, 64))
			default:
				header, row = append(header, name), append(row, fmt.Sprint(fv.Interface()))
			}
		}
	}
	walk("", reflect.ValueOf(*r))
	for _, c := range csvRedisCommands {
		header = append(header, "redis_per_event_"+c)
		v := ""
		if r.Redis != nil {
			if d, ok := r.Redis.Load[c]; ok {
				v = strconv.FormatFloat(d.PerEvent, 'g', 6, 64)
			} else {
				v = "0"
			}
		}
		row = append(row, v)
	}
	header = append(header, "problems")
	row = append(row, strings.Join(r.Errors, "; "))
	return header, row
}

// appendCSV appends r to path, writing the header first when the file is
// new or empty.
func appendCSV(path string, r *Result) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("--csv: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("--csv: %w", err)
	}
	header, row := csvRow(r)
	w := csv.NewWriter(f)
	if st.Size() == 0 {
		_ = w.Write(header)
	}
	_ = w.Write(row)
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("--csv: %w", err)
	}
	return nil
}

func writeJSON(w io.Writer, r *Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
