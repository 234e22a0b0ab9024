package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ssegate/ssegate/test/redistest"
)

// Headless Chromium's own EventSource, driven with chromedp (as test/e2e
// does for the demo page), in a tab on the gateway's origin.
var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserCancel context.CancelFunc
	browserDir    string
	browserErr    error
)

func stopBrowser() {
	if browserCancel != nil {
		browserCancel()
	}
	if browserDir != "" {
		_ = os.RemoveAll(browserDir)
	}
}

func chromium(t *testing.T) context.Context {
	t.Helper()
	bin := os.Getenv("CHROMIUM_BIN")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if p, err := exec.LookPath(bin); err != nil {
		if p, err = exec.LookPath("chromium"); err != nil {
			if redistest.InCI() {
				t.Fatalf("no Chromium at %s and CI is set; install it (apt-get install chromium) or set CHROMIUM_BIN", bin)
			}
			t.Skipf("no Chromium at %s (apt-get install chromium, or set CHROMIUM_BIN)", bin)
		}
		bin = p
	}
	browserOnce.Do(func() {
		browserDir, browserErr = os.MkdirTemp("", "ssegate-interop-chromium-")
		if browserErr != nil {
			return
		}
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin), chromedp.UserDataDir(browserDir), chromedp.Headless,
			chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelBrowser := chromedp.NewContext(allocCtx)
		browserCtx = ctx
		browserCancel = func() { cancelBrowser(); cancelAlloc() }
		if err := chromedp.Do(ctx); err != nil {
			browserErr = fmt.Errorf("start %s: %w", bin, err)
		}
	})
	if browserErr != nil {
		t.Fatal(browserErr)
	}
	return browserCtx
}

// The page's side: window.open_(name, url) opens an EventSource that
// records every named event as [type, data, hasData] and every error
// without data with the readyState at that moment.
const pageJS = `
window.cs = {};
window.open_ = (name, url) => {
  const es = new EventSource(url);
  const c = { es, got: [], errs: [] };
  for (const type of ["status", "progress", "complete", "error", "reset", "message"]) {
    es.addEventListener(type, (e) => {
      if (type === "error" && e.data === undefined) c.errs.push(es.readyState);
      else c.got.push([type, e.data]);
    });
  }
  window.cs[name] = c;
};
window.state_ = (name) => {
  const c = window.cs[name];
  return JSON.stringify({ got: c.got, errs: c.errs, readyState: c.es.readyState });
};
true;
`

type tab struct {
	t   *testing.T
	ctx context.Context
}

type esState struct {
	Got        [][2]string `json:"got"`
	Errs       []int       `json:"errs"`
	ReadyState int         `json:"readyState"`
}

func (s esState) keys() []string {
	out := make([]string, 0, len(s.Got))
	for _, g := range s.Got {
		out = append(out, key(g[0], g[1]))
	}
	return out
}

func newTab(t *testing.T, origin string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(chromium(t))
	t.Cleanup(cancel)
	// The first Run opens the tab for the lifetime of its context: no
	// timeout there.
	if _, err := chromedp.Run(ctx, chromedp.Navigate(origin+"/healthz")); err != nil {
		t.Fatalf("chromium: open tab: %v", err)
	}
	b := &tab{t: t, ctx: ctx}
	var v any
	b.eval(pageJS, &v)
	return b
}

// eval evaluates js in the tab and decodes its JSON value into out.
func (b *tab) eval(js string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js))
	if err == nil {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		b.t.Fatalf("chromium: %s: %v", js, err)
	}
}

func (b *tab) open(name, url string) {
	b.t.Helper()
	var v any
	b.eval(fmt.Sprintf("window.open_(%q, %q), true", name, url), &v)
}

func (b *tab) close(name string) {
	var v any
	b.eval(fmt.Sprintf("window.cs[%q].es.close(), true", name), &v)
}

func (b *tab) state(name string) esState {
	b.t.Helper()
	var s string
	b.eval(fmt.Sprintf("window.state_(%q)", name), &s)
	var st esState
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		b.t.Fatalf("chromium: state %q: %v", s, err)
	}
	return st
}

func (b *tab) waitLen(name string, n int) {
	b.t.Helper()
	if !waitFor(10*time.Second, func() bool { return len(b.state(name).Got) >= n }) {
		b.t.Fatalf("chromium: after 10 s: %+v, want %d events", b.state(name), n)
	}
}

// The EventSource readyState values.
const (
	esConnecting = 0
	esClosed     = 2
)

func TestChromium(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := newTab(t, e.gw.URL)

	t.Run("full job", func(t *testing.T) {
		b.t = t
		id := e.newJob()
		b.open(id, e.streamURL(id, ""))
		defer b.close(id)
		b.waitLen(id, 1)
		e.must(id, "processing", "progress 1", "progress 2", "progress 3", "complete")
		b.waitLen(id, len(wantFull))
		time.Sleep(300 * time.Millisecond)
		if got := b.state(id).keys(); !equal(got, wantFull) {
			t.Fatalf("got %q, want %q", got, wantFull)
		}
	})

	t.Run("resume across restart", func(t *testing.T) {
		b.t = t
		id := e.newJob()
		b.open(id, e.streamURL(id, ""))
		defer b.close(id)
		b.waitLen(id, 1)
		e.must(id, "processing", "progress 1")
		b.waitLen(id, 3)
		e.restart(id, "progress 2")
		e.must(id, "progress 3", "complete")
		b.waitLen(id, len(wantFull))
		time.Sleep(300 * time.Millisecond)
		if got := b.state(id).keys(); !equal(got, wantFull) {
			t.Fatalf("got %q, want %q (each once, none lost)", got, wantFull)
		}
	})

	t.Run("failed job vs connection error", func(t *testing.T) {
		b.t = t
		id := e.newJob()
		b.open(id, e.streamURL(id, ""))
		defer b.close(id)
		b.waitLen(id, 1)
		e.must(id, "processing", "fail")
		b.waitLen(id, len(wantFailed))
		if got := b.state(id).keys(); !equal(got, wantFailed) {
			t.Fatalf("got %q, want %q", got, wantFailed)
		}
		// A gateway that is gone: an error event without data, while the
		// EventSource reconnects.
		port, _ := redistest.FreePort()
		bad := "bad-" + id
		b.open(bad, fmt.Sprintf("http://127.0.0.1:%d/api/reports/%s/stream", port, id))
		defer b.close(bad)
		if !waitFor(5*time.Second, func() bool { return len(b.state(bad).Errs) > 0 }) {
			t.Fatalf("no error event for a refused connection: %+v", b.state(bad))
		}
		if st := b.state(bad); len(st.Got) != 0 || st.Errs[0] != esConnecting {
			t.Fatalf("refused connection: %+v, want an error without data while CONNECTING", st)
		}
	})

	t.Run("after the terminal event", func(t *testing.T) {
		b.t = t
		id := e.newJob()
		e.must(id, "complete")
		b.open(id, e.streamURL(id, ""))
		defer b.close(id)
		if !waitFor(5*time.Second, func() bool { return b.state(id).ReadyState == esClosed }) {
			t.Fatalf("not CLOSED 5 s after the complete event: %+v, requests %v", b.state(id), e.requests(id))
		}
		time.Sleep(500 * time.Millisecond)
		if got, want := ints(e.requests(id)...), ints(200, 204); got != want {
			t.Fatalf("stream requests %s, want %s", got, want)
		}
		if got := b.state(id).keys(); !equal(got, []string{"complete"}) {
			t.Fatalf("events %q, want the complete event once", got)
		}
	})

	t.Run("report near the inline limit", func(t *testing.T) {
		b.t = t
		id := e.newJob()
		b.open(id, e.streamURL(id, "includeReport=true"))
		defer b.close(id)
		b.waitLen(id, 1)
		e.must(id, "report")
		b.waitLen(id, len(wantReport))
		if got := b.state(id).keys(); !equal(got, wantReport) {
			t.Fatalf("got %q, want %q", got, wantReport)
		}
	})
	t.Run("report over 64 KiB", func(t *testing.T) {
		b.t = t
		big := e.defaultLimit()
		id := big.newJob()
		// The tab's origin is the other gateway: a cross-origin stream,
		// allowed by the default --cors-origins *.
		b.open(id, big.streamURL(id, "includeReport=true"))
		defer b.close(id)
		b.waitLen(id, 1)
		big.must(id, "bigreport")
		b.waitLen(id, len(wantBig))
		if got := b.state(id).keys(); !equal(got, wantBig) {
			t.Fatalf("got %q, want %q", got, wantBig)
		}
	})
}
