package interop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/gatewaytest"
	"github.com/ssegate/ssegate/test/redistest"
)

// nodeDir is the absolute path of the Node tests, set before TestMain moves
// to the repository root (gatewaytest builds the binaries of the module it
// runs in, so it must run there).
var nodeDir string

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	nodeDir = filepath.Join(wd, "node")
	if err := os.Chdir(filepath.Join(wd, "..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stopBrowser()
	os.Exit(code)
}

// Report sizes: the gateway inlines reports up to reportLimit bytes; the
// report of the "report" scenario is reportSize bytes, near that limit and
// near the 64 KiB line limit of bufio.Scanner-based clients.
// The "large report" scenario runs against a gateway with the default
// limit (1 MiB) and a bigReportSize report, over those clients' line limit.
const (
	reportLimit   = 64 << 10
	reportSize    = 60 << 10
	bigReportSize = 100 << 10
)

// env is one redis-server and one gateway, owned by one client's test.
type env struct {
	t     *testing.T
	redis *redistest.Server
	gw    *gatewaytest.Gateway
	pub   *publisher.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := redistest.Start(t)
	gw := gatewaytest.Start(t, srv.URL(), gatewaytest.WithFlags(
		"--report-max-bytes", fmt.Sprint(reportLimit), "--log-format", "json", "--log-level", "info"))
	return &env{t: t, redis: srv, gw: gw, pub: publisher.New(srv.Client(t))}
}

// defaultLimit returns an env on the same Redis whose gateway inlines
// reports up to 1 MiB (--report-max-bytes 1048576, the default until
// 2026-12-02; today's 60 KiB default announces a larger report with
// reportTooLarge and its URL instead).
func (e *env) defaultLimit() *env {
	e.t.Helper()
	gw := gatewaytest.Start(e.t, e.redis.URL(), gatewaytest.WithFlags("--report-max-bytes", "1048576", "--log-format", "json", "--log-level", "info"))
	return &env{t: e.t, redis: e.redis, gw: gw, pub: e.pub}
}

func ctx5() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// newJob registers a job with an unguessable ID.
func (e *env) newJob() string {
	e.t.Helper()
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	id := "interop-" + hex.EncodeToString(b)
	ctx, cancel := ctx5()
	defer cancel()
	if _, err := e.pub.Job(id).Register(ctx); err != nil {
		e.t.Fatalf("register %s: %v", id, err)
	}
	return id
}

// do publishes one step of a job: "processing", "progress N" (of 3),
// "complete", "report" (complete with a reportSize report) or "fail".
func (e *env) do(id, action string) error {
	ctx, cancel := ctx5()
	defer cancel()
	j := e.pub.Job(id)
	var err error
	switch {
	case action == "processing":
		_, err = j.Status(ctx, event.StatusProcessing)
	case strings.HasPrefix(action, "progress "):
		var n int
		fmt.Sscan(strings.TrimPrefix(action, "progress "), &n)
		_, err = j.Progress(ctx, publisher.Step{Step: n, Total: 3, Name: fmt.Sprintf("step %d", n)})
	case action == "complete":
		_, err = j.Complete(ctx, "r-"+id, nil)
	case action == "report":
		_, err = j.Complete(ctx, "r-"+id, report(reportSize))
	case action == "bigreport":
		_, err = j.Complete(ctx, "r-"+id, report(bigReportSize))
	case action == "fail":
		_, err = j.Fail(ctx, "upstream timed out", "UPSTREAM_TIMEOUT", true)
	default:
		err = fmt.Errorf("unknown action %q", action)
	}
	return err
}

func (e *env) must(id string, actions ...string) {
	e.t.Helper()
	for _, a := range actions {
		if err := e.do(id, a); err != nil {
			e.t.Fatalf("%s %s: %v", a, id, err)
		}
	}
}

// report is a JSON object of exactly size bytes.
func report(size int) json.RawMessage {
	const head, tail = `{"pad":"`, `"}`
	return json.RawMessage(head + strings.Repeat("x", size-len(head)-len(tail)) + tail)
}

// requests returns the HTTP status of every stream request of job id the
// gateway logged (its access log, one line per request when it ends), in
// order, across restarts.
func (e *env) requests(id string) []int {
	var out []int
	path := "/api/reports/" + id + "/stream"
	for _, line := range strings.Split(e.gw.Logs(), "\n") {
		if !strings.Contains(line, path) {
			continue
		}
		var rec struct {
			Msg    string `json:"msg"`
			Path   string `json:"path"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "request" && rec.Path == path {
			out = append(out, rec.Status)
		}
	}
	return out
}

// restart stops the gateway gracefully (SIGTERM: it tells its streams to
// come back and ends them), publishes what is given while it is down, and
// starts it again on the same address.
func (e *env) restart(id string, whileDown ...string) {
	e.t.Helper()
	e.gw.Stop()
	e.must(id, whileDown...)
	e.gw.Restart()
}

func (e *env) streamURL(id string, query string) string {
	u := e.gw.URL + "/api/reports/" + id + "/stream"
	if query != "" {
		u += "?" + query
	}
	return u
}

// key names a received event for comparison: "status:pending",
// "progress:2", "complete", "complete:report=N" (the inlined report's size),
// "error:CODE", "reset". A data that is not JSON of its event's type is
// named "BAD(...)", so it never matches.
func key(typ, data string) string {
	var ev struct {
		Type          string          `json:"type"`
		Status        string          `json:"status"`
		Step          int             `json:"step"`
		Code          string          `json:"code"`
		IncludeReport bool            `json:"includeReport"`
		Report        json.RawMessage `json:"report"`
	}
	if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Type != typ {
		if len(data) > 60 {
			data = data[:60] + "..."
		}
		return fmt.Sprintf("BAD(event %q, data %q)", typ, data)
	}
	switch typ {
	case "status":
		return "status:" + ev.Status
	case "progress":
		return fmt.Sprintf("progress:%d", ev.Step)
	case "error":
		return "error:" + ev.Code
	case "complete":
		if ev.IncludeReport {
			return fmt.Sprintf("complete:report=%d", len(ev.Report))
		}
		return "complete"
	}
	return typ
}

// The events each scenario must deliver, each exactly once, in order.
var (
	wantFull   = []string{"status:pending", "status:processing", "progress:1", "progress:2", "progress:3", "complete"}
	wantFailed = []string{"status:pending", "status:processing", "error:UPSTREAM_TIMEOUT"}
	wantReport = []string{"status:pending", fmt.Sprintf("complete:report=%d", reportSize)}
	wantBig    = []string{"status:pending", fmt.Sprintf("complete:report=%d", bigReportSize)}
)

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func ints(a ...int) string { return fmt.Sprint(a) }

// waitFor polls cond every 20 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder collects the events a Go client hands to the application.
type recorder struct {
	mu   chanMutex
	keys []string
}

type chanMutex chan struct{}

func newRecorder() *recorder { return &recorder{mu: make(chanMutex, 1)} }

func (r *recorder) add(typ, data string) {
	r.mu <- struct{}{}
	r.keys = append(r.keys, key(typ, data))
	<-r.mu
}

func (r *recorder) got() []string {
	r.mu <- struct{}{}
	defer func() { <-r.mu }()
	return append([]string(nil), r.keys...)
}

// waitLen waits up to 10 s until n events arrived.
func (r *recorder) waitLen(t *testing.T, n int) {
	t.Helper()
	if !waitFor(10*time.Second, func() bool { return len(r.got()) >= n }) {
		t.Fatalf("after 10 s got %d events, want at least %d: %q", len(r.got()), n, r.got())
	}
}

func itoa(n int) string { return fmt.Sprint(n) }
