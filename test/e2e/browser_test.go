package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ssegate/ssegate/test/redistest"
)

// One Chromium serves the whole package; each test works in a tab of its
// own, so tests run in parallel without paying for a browser start each.
var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserCancel context.CancelFunc
	browserDir    string
	browserErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if browserCancel != nil {
		browserCancel()
	}
	if browserDir != "" {
		_ = os.RemoveAll(browserDir)
	}
	os.Exit(code)
}

// chromiumPath returns the Chromium binary, CHROMIUM_BIN if set, else
// /usr/bin/chromium or chromium on PATH, and where it looked; the path is
// "" if there is no executable there.
func chromiumPath() (path, tried string) {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		p, _ = exec.LookPath(p)
		return p, "CHROMIUM_BIN=" + os.Getenv("CHROMIUM_BIN")
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, name
		}
	}
	return "", "/usr/bin/chromium and chromium on PATH"
}

// browser returns the shared browser's context, starting it on first use.
// Without Chromium the test is skipped, or fails in CI.
func browser(tb testing.TB) context.Context {
	tb.Helper()
	bin, tried := chromiumPath()
	if bin == "" {
		if redistest.InCI() {
			tb.Fatalf("e2e: no Chromium at %s and CI is set; install it (apt-get install chromium) or set CHROMIUM_BIN", tried)
		}
		tb.Skipf("e2e: no Chromium at %s (apt-get install chromium, or set CHROMIUM_BIN); skipping the browser tests", tried)
	}
	browserOnce.Do(func() {
		browserDir, browserErr = os.MkdirTemp("", "ssegate-chromium-")
		if browserErr != nil {
			return
		}
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin),
			chromedp.UserDataDir(browserDir),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.WindowSize(1280, 900),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelBrowser := chromedp.NewContext(allocCtx)
		browserCtx = ctx
		browserCancel = func() { cancelBrowser(); cancelAlloc() }
		// The first Do starts the browser, for the lifetime of the context it
		// is given: no timeout here.
		if err := chromedp.Do(ctx); err != nil {
			browserErr = fmt.Errorf("start %s: %w", bin, err)
		}
	})
	if browserErr != nil {
		tb.Fatalf("e2e: %v", browserErr)
	}
	return browserCtx
}

// page is one browser tab on the demo page.
type page struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex // guards errors
	errors []string   // uncaught exceptions of the page
}

// newPage opens a blank tab in the shared browser (skipping the test when
// there is no Chromium, before anything else starts). The tab closes when
// the test ends; an uncaught exception in the page fails the test.
func newPage(t *testing.T) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser(t))
	p := &page{t: t, ctx: ctx}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		cancel()
		t.Fatalf("e2e: open tab: %v", err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.errors = append(p.errors, m.String())
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.errors {
			t.Errorf("e2e: uncaught exception in the page: %s", e)
		}
	})
	return p
}

// open navigates to the demo page at url and waits until its script is
// ready.
func (p *page) open(url string) {
	p.t.Helper()
	p.do("navigate to "+url, chromedp.Navigate(url))
	p.waitUntil("the page script is ready", 10*time.Second, func() (bool, string) {
		return evalJS[bool](p, `document.body?.dataset.ready === "1"`), ""
	})
}

// evalJS evaluates expr in the page and decodes its JSON value into T.
func evalJS[T any](p *page, expr string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, opts...))
	var v T
	if err == nil {
		err = json.Unmarshal(raw, &v)
	}
	if err != nil {
		p.t.Fatalf("e2e: evaluate %q: %v", expr, err)
	}
	return v
}

// do runs actions in the tab.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("e2e: %s: %v", what, err)
	}
}

// waitUntil polls cond until it holds, failing the test after timeout with
// what cond last reported. Polling is how these tests wait: on page state,
// never on a fixed sleep.
func (p *page) waitUntil(what string, timeout time.Duration, cond func() (bool, string)) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("e2e: timed out after %v waiting for %s; %s", timeout, what, detail)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// jobState is the page's state of one job (window.__ssegate.snapshot()).
type jobState struct {
	JobID       string          `json:"jobId"`
	Status      string          `json:"status"`
	Step        int             `json:"step"`
	TotalSteps  int             `json:"totalSteps"`
	Percentage  int             `json:"percentage"`
	CurrentStep string          `json:"currentStep"`
	Events      []pageEvent     `json:"events"`
	ProgressIDs []string        `json:"progressIds"`
	Conn        string          `json:"conn"`
	ConnHistory []string        `json:"connHistory"`
	ConnErrors  int             `json:"connErrors"`
	Opens       int             `json:"opens"`
	Resets      int             `json:"resets"`
	ResumedFrom string          `json:"resumedFrom"`
	Report      json.RawMessage `json:"report"`
	ReportID    string          `json:"reportId"`
	Failure     *struct {
		Error     string `json:"error"`
		Code      string `json:"code"`
		Retryable bool   `json:"retryable"`
	} `json:"failure"`
	CloseCalled bool `json:"closeCalled"`
	Done        bool `json:"done"`
	ReadyState  int  `json:"readyState"` // of the job's EventSource; 2 is CLOSED
}

// pageEvent is one event the page rendered.
type pageEvent struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	JobID string `json:"jobId"`
}

func (s jobState) String() string {
	return fmt.Sprintf("status=%s %d%% step=%d/%d conn=%s history=%v connErrors=%d opens=%d events=%d progress=%d done=%v closeCalled=%v readyState=%d",
		s.Status, s.Percentage, s.Step, s.TotalSteps, s.Conn, s.ConnHistory, s.ConnErrors, s.Opens, len(s.Events), len(s.ProgressIDs), s.Done, s.CloseCalled, s.ReadyState)
}

// jobs returns the page's state of every job.
func (p *page) jobs() map[string]jobState {
	p.t.Helper()
	return evalJS[map[string]jobState](p, `window.__ssegate.snapshot()`)
}

// job returns the page's state of one job.
func (p *page) job(id string) jobState {
	p.t.Helper()
	s, ok := p.jobs()[id]
	if !ok {
		p.t.Fatalf("e2e: the page has no job %s", id)
	}
	return s
}

// waitJob waits until the page's state of job id satisfies ok.
func (p *page) waitJob(id, what string, timeout time.Duration, ok func(jobState) bool) jobState {
	p.t.Helper()
	var last jobState
	p.waitUntil(fmt.Sprintf("job %s: %s", id, what), timeout, func() (bool, string) {
		s, found := p.jobs()[id]
		if !found {
			return false, "the page has no such job"
		}
		last = s
		return ok(s), "page state: " + s.String()
	})
	return last
}

// start starts a demo job through the page's own code (what the Generate
// button runs) with the given JSON options, and returns its ID.
func (p *page) start(optsJSON string) string {
	p.t.Helper()
	id := evalJS[string](p, `window.__ssegate.start(`+optsJSON+`)`, chromedp.EvalAwaitPromise)
	if id == "" {
		p.t.Fatalf("e2e: the page could not start a job with %s: %s", optsJSON, p.text("#notice"))
	}
	return id
}

// cardAttr returns a data attribute of a job's card.
func (p *page) cardAttr(id, attr string) string {
	p.t.Helper()
	return evalJS[string](p, fmt.Sprintf(`(document.querySelector('.card[data-job=%s]')?.dataset[%s]) ?? ""`,
		strconv.Quote(id), strconv.Quote(attr)))
}

// cardText returns the text of the element sel in a job's card.
func (p *page) cardText(id, sel string) string {
	p.t.Helper()
	return strings.TrimSpace(evalJS[string](p, fmt.Sprintf(`(document.querySelector('.card[data-job=%s] %s')?.textContent) ?? ""`,
		strconv.Quote(id), sel)))
}

// text returns the text of the element sel.
func (p *page) text(sel string) string {
	p.t.Helper()
	return strings.TrimSpace(evalJS[string](p, fmt.Sprintf(`(document.querySelector(%s)?.textContent) ?? ""`, strconv.Quote(sel))))
}

// screenshot returns a PNG of the whole page (at least the viewport).
func (p *page) screenshot() []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("e2e: screenshot: %v", err)
	}
	return b
}

var errNoCard = errors.New("no card")

// newestCard returns the job ID of the newest card on the page.
func (p *page) newestCard() (string, error) {
	id := evalJS[string](p, `(document.querySelector('#jobs .card')?.dataset.job) ?? ""`)
	if id == "" {
		return "", errNoCard
	}
	return id, nil
}
