package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
)

// jobTimeout bounds the wait for a fast demo job (about 0.6 s) on a loaded
// machine.
const jobTimeout = 20 * time.Second

// TestDemoRunsJobToCompletion clicks "Generate report" and follows the job
// to 100 % and its rendered report; the page rendered every published event
// exactly once, in order, and closed its EventSource.
func TestDemoRunsJobToCompletion(t *testing.T) {
	t.Parallel()
	p := newPage(t) // skips without Chromium, before anything starts
	st := startStack(t)
	p.open(st.gw.URL + "/")

	p.do("click Generate report", chromedp.Click(chromedp.CSS("#generate")))
	var id string
	p.waitUntil("a job card", 10*time.Second, func() (bool, string) {
		var err error
		id, err = p.newestCard()
		return err == nil, "notice: " + p.text("#notice")
	})
	s := p.waitJob(id, "done", jobTimeout, func(s jobState) bool { return s.Done })

	if s.Status != "completed" || s.Percentage != 100 {
		t.Errorf("final state: %s; want completed at 100%%", s)
	}
	if got := p.cardText(id, ".pct"); got != "100%" {
		t.Errorf("the card shows %q, want 100%%", got)
	}
	if got := p.cardAttr(id, "status"); got != "completed" {
		t.Errorf("card data-status = %q, want completed", got)
	}
	if got := p.cardText(id, ".report-title"); got != "Quarterly sales by region" {
		t.Errorf("report title = %q", got)
	}
	if rows := evalJS[int](p, `document.querySelectorAll('.card[data-job="`+id+`"] .report-table tbody tr').length`); rows != 5 {
		t.Errorf("the report table has %d rows, want 5", rows)
	}
	var report struct {
		Title string            `json:"title"`
		Rows  []json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(s.Report, &report); err != nil || report.Title == "" || len(report.Rows) != 5 {
		t.Errorf("the page's report = %s (%v)", s.Report, err)
	}

	// Every published event after the register event (the stream URL
	// resumes from it) was rendered exactly once, in order.
	published := st.stream(t, id)
	if len(published) != 1+1+9+1 || published[0].Type != "status" || published[len(published)-1].Type != "complete" {
		t.Fatalf("published stream = %v; want register, processing, 9 progress, complete", published)
	}
	assertRenderedOnce(t, s, published[1:])
	if want := st.streamIDs(t, id, "progress"); !slices.Equal(s.ProgressIDs, want) {
		t.Errorf("progress events rendered %v\npublished %v", s.ProgressIDs, want)
	}
	if !s.CloseCalled || s.ReadyState != 2 || s.Conn != "closed" {
		t.Errorf("after complete: %s; want close() called and readyState CLOSED", s)
	}
	if want := []string{"connecting", "live", "closed"}; !slices.Equal(s.ConnHistory, want) {
		t.Errorf("connection states %v, want %v", s.ConnHistory, want)
	}
}

// TestDemoNoRequestAfterComplete checks from the server side that the
// browser makes no further stream request after complete: the gateway
// opened one stream for the job, and a proxy in front of it saw one request
// (a reconnect answered 204 would show there), over a window of ten retry
// intervals.
func TestDemoNoRequestAfterComplete(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	proxy := newCountingProxy(t, st.gw.URL)
	p.open(proxy.URL + "/")

	id := p.start(`{}`)
	s := p.waitJob(id, "done", jobTimeout, func(s jobState) bool { return s.Done })
	if s.Status != "completed" || !s.CloseCalled || s.ReadyState != 2 {
		t.Fatalf("after complete: %s; want completed, close() called, readyState CLOSED", s)
	}

	// The gateway's retry hint is 100 ms (gatewaytest's default): a browser
	// that reconnected would have done so many times over in this window.
	window := time.Now().Add(time.Second)
	for time.Now().Before(window) {
		if n, statuses := proxy.streamRequests(id); n != 1 {
			t.Fatalf("stream requests of %s: %d (answers %v), want 1", id, n, statuses)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, statuses := proxy.streamRequests(id); n != 1 || !slices.Equal(statuses, []int{200}) {
		t.Errorf("stream requests of %s: %d with answers %v; want one 200", id, n, statuses)
	}
	if opened, err := st.gw.Metric("ssegate_connections_opened_total"); err != nil || opened != 1 {
		t.Errorf("ssegate_connections_opened_total = %v (%v), want 1", opened, err)
	}
	if n := strings.Count(st.gw.Logs(), `msg="stream opened" job=`+id+" "); n != 1 {
		t.Errorf("the gateway logged %d \"stream opened\" for %s, want 1", n, id)
	}
	if s := p.job(id); s.Opens != 1 || s.ConnErrors != 0 {
		t.Errorf("page: %s; want one open and no connection error", s)
	}
}

// TestDemoResumesAcrossGatewayRestart stops the gateway mid-job and starts
// another on the same address. The page shows reconnecting, then resumed;
// the browser's EventSource sends Last-Event-ID and gets exactly what it
// missed, including the events published while no gateway ran, so every
// event is rendered exactly once.
func TestDemoResumesAcrossGatewayRestart(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := "e2e-restart-" + randomHex(4)
	job := publisher.New(st.rdb).Job(id)
	must := func(_ string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(job.Register(ctx))

	p.open(st.gw.URL + "/?watch=" + id)
	p.waitJob(id, "live", 10*time.Second, func(s jobState) bool { return s.Conn == "live" && len(s.Events) == 1 })

	const total = 8
	progress := func(step int) {
		t.Helper()
		must(job.Progress(ctx, publisher.Step{Step: step, Total: total, Name: "Step " + strconv.Itoa(step+1)}))
	}
	must(job.Status(ctx, event.StatusProcessing))
	for step := 0; step <= 2; step++ {
		progress(step)
	}
	p.waitJob(id, "3 progress events", 10*time.Second, func(s jobState) bool { return len(s.ProgressIDs) == 3 })

	st.gw.Stop()
	p.waitUntil("the card to show reconnecting", 10*time.Second, func() (bool, string) {
		conn, text := p.cardAttr(id, "conn"), p.cardText(id, ".conn-text")
		return conn == "reconnecting" && text == "Reconnecting…", "card conn=" + conn + " text=" + text
	})
	for step := 3; step <= 5; step++ { // published while no gateway runs
		progress(step)
	}

	st.gw.Restart()
	s := p.waitJob(id, "resumed with the missed events", 15*time.Second, func(s jobState) bool {
		return s.Conn == "resumed" && len(s.ProgressIDs) == 6
	})
	if text := p.cardText(id, ".conn-text"); text != "Resumed" {
		t.Errorf("card connection indicator = %q, want Resumed", text)
	}
	if s.Status != "processing" || s.Done {
		t.Errorf("after resuming: %s", s)
	}
	for step := 6; step <= total; step++ {
		progress(step)
	}
	must(job.Complete(ctx, "r-"+id, json.RawMessage(`{"title":"Restart report","rows":[]}`)))
	s = p.waitJob(id, "done", jobTimeout, func(s jobState) bool { return s.Done })

	if s.Status != "completed" || s.Percentage != 100 || !s.CloseCalled || s.ReadyState != 2 {
		t.Errorf("final state: %s", s)
	}
	// The first connection got the register event (the snapshot of a
	// pending job carries its ID); every later event came live or replayed.
	assertRenderedOnce(t, s, st.stream(t, id))
	if want := st.streamIDs(t, id, "progress"); !slices.Equal(s.ProgressIDs, want) {
		t.Errorf("progress events rendered %v\npublished %v", s.ProgressIDs, want)
	}
	reconnecting := slices.Index(s.ConnHistory, "reconnecting")
	resumed := slices.Index(s.ConnHistory[max(reconnecting, 0):], "resumed")
	if reconnecting < 0 || resumed < 0 || s.ConnHistory[len(s.ConnHistory)-1] != "closed" {
		t.Errorf("connection states %v; want live, reconnecting, resumed, closed in that order", s.ConnHistory)
	}
	if s.Opens < 2 || s.Resets != 0 {
		t.Errorf("page: %s; want a second open and no reset", s)
	}
	if !strings.Contains(st.gw.Logs(), "resume=true last_event_id="+s.ProgressIDs[2]) {
		t.Errorf("the restarted gateway logged no resume from %s (the last event before the stop)", s.ProgressIDs[2])
	}
}

// TestDemoShowsJobFailure picks "Fails at step 5": the card shows the
// failure state with its error code, and the page does not take the job's
// error event for a connection problem.
func TestDemoShowsJobFailure(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	p.open(st.gw.URL + "/")

	p.do("choose a failure", chromedp.SetValue(chromedp.CSS("#outcome"), "5"))
	p.do("click Generate report", chromedp.Click(chromedp.CSS("#generate")))
	var id string
	p.waitUntil("a job card", 10*time.Second, func() (bool, string) {
		var err error
		id, err = p.newestCard()
		return err == nil, "notice: " + p.text("#notice")
	})
	s := p.waitJob(id, "done", jobTimeout, func(s jobState) bool { return s.Done })

	if s.Status != "failed" || s.Failure == nil || s.Failure.Code != "UPSTREAM_TIMEOUT" || !s.Failure.Retryable {
		t.Fatalf("final state: %s, failure %+v; want failed with UPSTREAM_TIMEOUT", s, s.Failure)
	}
	if got := p.cardAttr(id, "status"); got != "failed" {
		t.Errorf("card data-status = %q, want failed", got)
	}
	if got := p.cardText(id, ".failure-code"); got != "UPSTREAM_TIMEOUT" {
		t.Errorf("the card shows code %q, want UPSTREAM_TIMEOUT", got)
	}
	if got := p.cardText(id, ".failure-msg"); !strings.Contains(got, "Detecting anomalies") {
		t.Errorf("the card shows message %q, want the failing step named", got)
	}
	if got := p.cardText(id, ".status-badge"); got != "Failed" {
		t.Errorf("status badge = %q, want Failed", got)
	}
	// Not a connection problem: no connection error, never reconnecting.
	if got := p.cardText(id, ".conn-text"); got != "Stream closed" {
		t.Errorf("connection indicator = %q, want Stream closed", got)
	}
	if want := []string{"connecting", "live", "closed"}; s.ConnErrors != 0 || !slices.Equal(s.ConnHistory, want) {
		t.Errorf("connection: %d errors, states %v; want none and %v", s.ConnErrors, s.ConnHistory, want)
	}
	if !s.CloseCalled || s.ReadyState != 2 {
		t.Errorf("after the failure: %s; want close() called and readyState CLOSED", s)
	}
	published := st.stream(t, id)
	if last := published[len(published)-1]; last.Type != "error" {
		t.Fatalf("published stream ends with %v, want error", last)
	}
	assertRenderedOnce(t, s, published[1:])
	if want := st.streamIDs(t, id, "progress"); len(want) != 5 || !slices.Equal(s.ProgressIDs, want) {
		t.Errorf("progress events rendered %v\npublished %v (want steps 0-4)", s.ProgressIDs, want)
	}
}

// TestDemoRefusedStream watches a job that does not exist: the gateway
// answers 404, the browser gives up, and the card says the connection was
// refused and why, without showing a job failure.
func TestDemoRefusedStream(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	p.open(st.gw.URL + "/?watch=no-such-job")
	s := p.waitJob("no-such-job", "refused", 10*time.Second, func(s jobState) bool { return s.Conn == "lost" })
	if s.Status != "pending" || s.Failure != nil || s.Done || s.ReadyState != 2 {
		t.Errorf("page: %s; want a refused connection, not a job failure", s)
	}
	if got := p.cardText("no-such-job", ".conn-text"); got != "Disconnected" {
		t.Errorf("connection indicator = %q, want Disconnected", got)
	}
	p.waitUntil("the reason", 10*time.Second, func() (bool, string) {
		got := p.cardText("no-such-job", ".step")
		return strings.Contains(got, "JOB_NOT_FOUND"), "step text: " + got
	})
	if got := p.cardText("no-such-job", ".failure"); got != "" {
		t.Errorf("the card shows a job failure: %q", got)
	}
}

// TestDemoTwoJobsSideBySide runs a fast and a slow job at once: each card
// shows its own job's events only, the fast one completes while the slow
// one is still running, and then the slow one completes too.
func TestDemoTwoJobsSideBySide(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	p.open(st.gw.URL + "/")

	slow := p.start(`{"stepScale": 6}`) // about 3.6 s
	fast := p.start(`{"stepScale": 1}`) // about 0.6 s
	if n := evalJS[int](p, `document.querySelectorAll('#jobs .card').length`); n != 2 {
		t.Fatalf("%d cards on the page, want 2", n)
	}
	p.waitJob(fast, "done", jobTimeout, func(s jobState) bool { return s.Done })
	if s := p.job(slow); s.Done || s.Percentage == 100 || s.Status != "processing" || s.Conn != "live" {
		t.Errorf("when the fast job completed, the slow one was %s; want still processing", s)
	}
	p.waitJob(slow, "done", jobTimeout, func(s jobState) bool { return s.Done })

	for _, id := range []string{fast, slow} {
		s := p.job(id)
		if s.Status != "completed" || s.Percentage != 100 || !s.CloseCalled || s.ReadyState != 2 {
			t.Errorf("job %s: %s", id, s)
		}
		for _, e := range s.Events {
			if e.JobID != id {
				t.Errorf("the card of %s rendered an event of %s: %+v", id, e.JobID, e)
			}
		}
		assertRenderedOnce(t, s, st.stream(t, id)[1:])
		if p.cardText(id, ".report-title") == "" {
			t.Errorf("the card of %s shows no report", id)
		}
	}
}

// TestDemoScreenshots runs three jobs (one fails) and takes the demo's
// screenshots mid-job and after completion. With
// SSEGATE_UPDATE_SCREENSHOTS=1 it writes them to docs/ (CI does not, so
// the tree stays clean).
func TestDemoScreenshots(t *testing.T) {
	t.Parallel()
	p := newPage(t)
	st := startStack(t)
	p.do("set the viewport", chromedp.EmulateViewport(1280, 720))
	p.open(st.gw.URL + "/")

	third := p.start(`{"stepScale": 10}`)
	second := p.start(`{"stepScale": 6, "failAtStep": 6}`)
	first := p.start(`{"stepScale": 4}`)
	p.waitJob(first, "half way", jobTimeout, func(s jobState) bool { return s.Percentage >= 50 })
	running := p.screenshot()
	for _, id := range []string{first, second, third} {
		p.waitJob(id, "done", jobTimeout, func(s jobState) bool { return s.Done })
	}
	// Let the last progress bar finish its CSS transition.
	p.waitUntil("the bars to settle", 5*time.Second, func() (bool, string) {
		w := evalJS[float64](p, `(() => { const c = document.querySelector('.card[data-job="`+third+`"]');
			return c.querySelector('.bar').getBoundingClientRect().width / c.querySelector('.progress').getBoundingClientRect().width; })()`)
		return w > 0.999, "bar at " + strconv.FormatFloat(w, 'f', 3, 64)
	})
	complete := p.screenshot()

	if s := p.job(second); s.Status != "failed" {
		t.Errorf("the second job: %s; want failed", s)
	}
	for _, b := range [][]byte{running, complete} {
		if len(b) < 8 || string(b[1:4]) != "PNG" {
			t.Fatalf("screenshot is not a PNG (%d bytes)", len(b))
		}
	}
	if v, _ := strconv.ParseBool(os.Getenv("SSEGATE_UPDATE_SCREENSHOTS")); !v {
		t.Log("screenshots taken; set SSEGATE_UPDATE_SCREENSHOTS=1 to write them to docs/")
		return
	}
	for name, b := range map[string][]byte{"demo-running.png": running, "demo-complete.png": complete} {
		path := filepath.Join("..", "..", "docs", name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
}

// assertRenderedOnce checks that the page rendered exactly the published
// events, each once and in order.
func assertRenderedOnce(t *testing.T, s jobState, published []entry) {
	t.Helper()
	var got, want []string
	for _, e := range s.Events {
		got = append(got, e.Type+" "+e.ID)
	}
	for _, e := range published {
		want = append(want, e.Type+" "+e.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("rendered events:\n  %v\npublished:\n  %v", got, want)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
