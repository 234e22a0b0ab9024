package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// loggedWriter records the status a handler answered with. It unwraps to
// the ResponseWriter it wraps, so a stream can still take its connection
// over.
type loggedWriter struct {
	http.ResponseWriter
	status int
}

func (w *loggedWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *loggedWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requestLog is a request logger of the usual kind: it writes its line
// after the handler returned.
type requestLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *requestLog) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lw := &loggedWriter{ResponseWriter: w}
		next.ServeHTTP(lw, r)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, lw.status))
	})
}

func (l *requestLog) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, got := range l.lines {
		if strings.HasPrefix(got, prefix) {
			return true
		}
	}
	return false
}

// recoverer is a recover middleware of the usual kind.
func recoverer(panics *int, mu *sync.Mutex) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if p := recover(); p != nil {
					mu.Lock()
					*panics++
					mu.Unlock()
					http.Error(w, "panic", http.StatusInternalServerError)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// TestOrdinaryMiddleware: a request logger and a recover middleware wrap
// every route, streams included (a taken-over stream once reset Echo's
// context under any middleware that ran after the handler: a nil
// dereference). The stream is still taken over through the logger's
// wrapped ResponseWriter.
func TestOrdinaryMiddleware(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	log := &requestLog{}
	var mu sync.Mutex
	panics := 0
	g := startGatewayWith(t, testConfig(), e.rdb, func(s *gateway.Server) {
		s.Use(log.middleware, recoverer(&panics, &mu))
	})
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("mw")
	ok(job.Register(ctx))
	s := streamtest.Open(t, []string{g.streamURL("mw")}, "")
	s.WaitEvents(t, 1)
	ok(job.Progress(ctx, publisher.Step{Step: 1, Total: 2}))
	s.WaitEvents(t, 2)
	s.Close()
	ok(job.Progress(ctx, publisher.Step{Step: 2, Total: 2}))
	rest := streamtest.Open(t, []string{g.streamURL("mw")}, s.Client.LastEventID())
	rest.WaitEvents(t, 1)
	ok(job.Complete(ctx, "r", nil))
	if err := rest.WaitDone(t); err != nil {
		t.Fatal(err)
	}
	streamtest.AssertExactlyOnce(t, append(s.Events(), rest.Events()...), e.history("mw"))

	status, _, _ := rawGet(t, g.streamURL("nope"))
	if status != http.StatusNotFound {
		t.Errorf("unknown job: %d", status)
	}
	if status, _, body := rawGet(t, g.URL+"/api/reports/mw"); status != http.StatusOK || !strings.Contains(body, `"completed"`) {
		t.Errorf("snapshot: %d %s", status, body)
	}
	// A taken-over stream writes its head past the ResponseWriter: the
	// logger sees the handler return (status 0) once the stream is handed
	// off, or 200 for one that stayed with net/http.
	for _, line := range []string{
		"GET /api/reports/mw/stream ", "GET /api/reports/nope/stream 404", "GET /api/reports/mw 200",
	} {
		streamtest.Eventually(t, "logged: "+line, func() bool { return log.has(line) })
	}
	mu.Lock()
	defer mu.Unlock()
	if panics != 0 || g.metric(t, "ssegate_panics_total") != 0 {
		t.Errorf("%d panics reached the recover middleware, %v the gateway's", panics, g.metric(t, "ssegate_panics_total"))
	}
	if got := g.metric(t, "ssegate_connections_closed_total", "reason", "finished"); got < 1 {
		t.Errorf("finished streams = %v", got)
	}
	// Taken over through the wrapper: the stream says it closes.
	ok(e.pub.Job("mw-running").Register(ctx))
	resp, err := http.Get(g.streamURL("mw-running"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("stream through the middleware: %s, close=%v; want 200 taken over (close)", resp.Status, resp.Close)
	}
}
