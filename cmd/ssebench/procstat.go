package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go runs on (the kernel exports no other
// value to user space; prometheus/procfs assumes the same).
const clockTicks = 100

// raiseNoFile raises this process's RLIMIT_NOFILE soft limit to the hard
// limit and returns the new soft limit. (Go already does this at start-up on
// Linux; doing it here makes the number visible and independent of that.)
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return l.Cur, fmt.Errorf("setrlimit: %w", err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	return l.Cur, nil
}

// selfCPU returns the CPU seconds (user + system) this process has used.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// procSample is one reading of a process's (or a set of processes')
// resources. OK is false when nothing could be read.
type procSample struct {
	At  time.Time
	RSS float64 // bytes
	CPU float64 // seconds, user + system
	OK  bool
	// From the gateways' /metrics, when it could be read (Scraped):
	// ssegate_slow_client_disconnects_total, and the Go heap and stacks
	// in use (go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes),
	// which, unlike RSS, shrink when memory is freed.
	Slow    float64
	GoMem   float64
	Scraped bool
}

// readProc reads CPU seconds and RSS of a process from /proc.
func readProc(pid int) (cpu, rss float64, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// fields are counted after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("malformed /proc stat times")
	}
	rssKB, err := statusField(pid, "VmRSS:")
	if err != nil {
		return 0, 0, err
	}
	return float64(ut+st) / clockTicks, rssKB * 1024, nil
}

// statusField returns the number of a "Name:  123 kB" line of
// /proc/PID/status (pid 0: this process).
func statusField(pid int, name string) (float64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseFloat(f[0], 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s line", p, name)
}

// openFileLimit returns the soft "Max open files" of a process.
func openFileLimit(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				if f[0] == "unlimited" {
					return 1 << 62, nil
				}
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no Max open files line")
}

// A serverSampler reads the resources of the server under test: from
// /proc when its PIDs are known, else from the process collectors on each
// gateway's /metrics. With several gateways the figures are summed.
type serverSampler struct {
	pids    []int
	urls    []string // gateway base URLs, for /metrics
	metrics bool     // scrape /metrics (gateways only; the floor has none)
	client  *http.Client
}

// source says where the figures come from.
func (s *serverSampler) source() string {
	switch {
	case len(s.pids) > 0:
		return "proc"
	case s.metrics:
		return "metrics"
	}
	return "none"
}

func (s *serverSampler) sample(ctx context.Context) procSample {
	out := procSample{At: time.Now(), OK: true}
	var scraped []map[string]float64
	if s.metrics {
		for _, u := range s.urls {
			m, err := scrapeMetrics(ctx, s.client, u+"/metrics")
			if err != nil {
				scraped = nil
				break
			}
			scraped = append(scraped, m)
		}
	}
	if scraped != nil {
		out.Scraped = true
		for _, m := range scraped {
			out.Slow += m["ssegate_slow_client_disconnects_total"]
			out.GoMem += m["go_memstats_heap_inuse_bytes"] + m["go_memstats_stack_inuse_bytes"]
		}
	}
	switch {
	case len(s.pids) > 0:
		for _, pid := range s.pids {
			cpu, rss, err := readProc(pid)
			if err != nil {
				return procSample{At: out.At}
			}
			out.CPU += cpu
			out.RSS += rss
		}
	case scraped != nil:
		for _, m := range scraped {
			rss, ok1 := m["process_resident_memory_bytes"]
			cpu, ok2 := m["process_cpu_seconds_total"]
			if !ok1 || !ok2 {
				return procSample{At: out.At, Slow: out.Slow, GoMem: out.GoMem, Scraped: true}
			}
			out.RSS += rss
			out.CPU += cpu
		}
	default:
		out.OK = false
	}
	return out
}

// wantedMetrics are the samples scrapeMetrics keeps.
var wantedMetrics = map[string]bool{
	"process_resident_memory_bytes":         true,
	"process_cpu_seconds_total":             true,
	"ssegate_slow_client_disconnects_total": true,
	"ssegate_connections":                   true,
	"go_memstats_heap_inuse_bytes":          true,
	"go_memstats_stack_inuse_bytes":         true,
}

// scrapeMetrics reads the unlabelled samples of wantedMetrics from a
// Prometheus text exposition.
func scrapeMetrics(ctx context.Context, c *http.Client, url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok || !wantedMetrics[name] {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// cpuTimes is the machine's CPU time from the first line of /proc/stat, in
// ticks: busy (everything but idle and iowait) and total.
type cpuTimes struct{ busy, total float64 }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return cpuTimes{}
		}
		if i == 8 || i == 9 {
			break // guest time is already counted in user time
		}
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

// busyPct is the share of all cores busy between a and b.
func busyPct(a, b cpuTimes) float64 {
	if b.total <= a.total {
		return -1
	}
	return 100 * (b.busy - a.busy) / (b.total - a.total)
}

// localPorts is the size of the local (ephemeral) port range: the most
// connections this machine can open to one server address.
func localPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}
