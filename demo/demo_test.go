package demo_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ssegate/ssegate/demo"
	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newDemo returns a Demo on a fresh Redis (real redis-server where there is
// one) and a client of that Redis. The Demo is closed when the test ends.
func newDemo(t *testing.T, opts ...demo.Option) (*demo.Demo, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	d := demo.New(publisher.New(rdb), nil, append([]demo.Option{demo.WithStepScale(0.01)}, opts...)...)
	t.Cleanup(d.Close)
	return d, rdb
}

func do(t *testing.T, h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

type created struct {
	JobID      string `json:"jobId"`
	StreamURL  string `json:"streamUrl"`
	Steps      int    `json:"steps"`
	FailAtStep int    `json:"failAtStep"`
}

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// decode decodes a JSON answer, failing on anything else.
func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, body %s", ct, w.Body)
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v", v, err)
	}
	return v
}

// waitIdle waits until d runs no job.
func waitIdle(t *testing.T, d *demo.Demo) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for d.Running() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d demo jobs still running after 15s", d.Running())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// published returns a job's stream: each event's type and data.
func published(t *testing.T, rdb *redis.Client, job string) []redis.XMessage {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), protocol.NewKeys("").Events(job), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func TestCreateJobRunsSimulatedReport(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		body      string
		steps     int // progress events are steps 0..steps (or up to failAt-1)
		failAt    int
		lastType  event.Type
		lastCode  string
		wantNames []string
	}{
		{name: "no body", body: "", steps: 8, lastType: event.TypeComplete,
			wantNames: []string{"Fetching data", "Validating", "Aggregating", "Computing trends", "Detecting anomalies", "Building charts", "Rendering tables", "Writing summary", "Finalizing"}},
		{name: "empty object", body: `{}`, steps: 8, lastType: event.TypeComplete},
		{name: "fewer steps", body: `{"steps": 3, "stepScale": 0.5}`, steps: 3, lastType: event.TypeComplete,
			wantNames: []string{"Fetching data", "Validating", "Aggregating", "Finalizing"}},
		{name: "fail at step 3", body: `{"failAtStep": 3}`, steps: 8, failAt: 3, lastType: event.TypeError, lastCode: demo.CodeUpstreamTimeout,
			wantNames: []string{"Fetching data", "Validating", "Aggregating"}},
		{name: "fail at the first step", body: `{"failAtStep": 1, "steps": 1}`, steps: 1, failAt: 1, lastType: event.TypeError, lastCode: demo.CodeUpstreamTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, rdb := newDemo(t)
			w := do(t, d, http.MethodPost, "/demo/jobs", tc.body)
			if w.Code != http.StatusCreated {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			c := decode[created](t, w)
			if !strings.HasPrefix(c.JobID, "demo-") || !protocol.ValidJobID(c.JobID) {
				t.Errorf("job ID %q", c.JobID)
			}
			if c.Steps != tc.steps || c.FailAtStep != tc.failAt {
				t.Errorf("answer %+v, want %d steps, failAtStep %d", c, tc.steps, tc.failAt)
			}
			if loc := w.Header().Get("Location"); loc != "/api/reports/"+c.JobID {
				t.Errorf("Location %q", loc)
			}
			waitIdle(t, d)

			msgs := published(t, rdb, c.JobID)
			// The stream URL resumes after the register event, so a client
			// that opens it late still gets every later event.
			if want := "/api/reports/" + c.JobID + "/stream?includeReport=true&lastEventId=" + msgs[0].ID; c.StreamURL != want {
				t.Errorf("streamUrl %q, want %q", c.StreamURL, want)
			}
			var types []string
			var names []string
			for i, m := range msgs {
				types = append(types, m.Values["type"].(string))
				if m.Values["type"] == string(event.TypeProgress) {
					var p event.ProgressEvent
					if err := json.Unmarshal([]byte(m.Values["data"].(string)), &p); err != nil {
						t.Fatal(err)
					}
					if p.Step != len(names) || p.TotalSteps != tc.steps || p.JobID != c.JobID {
						t.Errorf("event %d: %+v", i, p)
					}
					names = append(names, p.CurrentStep)
				}
			}
			progress := tc.steps + 1
			if tc.failAt > 0 {
				progress = tc.failAt
			}
			want := append([]string{"status", "status"}, strings.Fields(strings.Repeat("progress ", progress))...)
			want = append(want, string(tc.lastType))
			if strings.Join(types, " ") != strings.Join(want, " ") {
				t.Errorf("published %v\nwant      %v", types, want)
			}
			if tc.wantNames != nil && strings.Join(names, "|") != strings.Join(tc.wantNames, "|") {
				t.Errorf("step names %q, want %q", names, tc.wantNames)
			}
			last := msgs[len(msgs)-1].Values["data"].(string)
			state, err := rdb.HGetAll(context.Background(), protocol.NewKeys("").State(c.JobID)).Result()
			if err != nil {
				t.Fatal(err)
			}
			switch tc.lastType {
			case event.TypeError:
				var e event.ErrorEvent
				if err := json.Unmarshal([]byte(last), &e); err != nil || e.Code != tc.lastCode || !e.Retryable || e.Error == "" {
					t.Errorf("error event %s (%v)", last, err)
				}
			case event.TypeComplete:
				var r struct {
					Title, Period, Currency string
					GeneratedAt             event.Timestamp
					Rows                    []struct {
						Region  string
						Orders  int
						Revenue float64
					}
					Totals struct {
						Orders  int
						Revenue float64
					}
					Highlights []string
				}
				if err := json.Unmarshal([]byte(state[protocol.FieldReport]), &r); err != nil {
					t.Fatalf("report %q: %v", state[protocol.FieldReport], err)
				}
				sum := 0
				for _, row := range r.Rows {
					sum += row.Orders
				}
				if r.Title == "" || r.Period == "" || r.GeneratedAt.IsZero() || len(r.Rows) != 5 || sum != r.Totals.Orders || len(r.Highlights) == 0 {
					t.Errorf("report %s", state[protocol.FieldReport])
				}
			}
		})
	}
}

func TestCreateJobRejectsBadInput(t *testing.T) {
	t.Parallel()
	d, rdb := newDemo(t)
	for _, tc := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"malformed JSON", `{`, http.StatusBadRequest, demo.CodeInvalidJSON},
		{"not an object", `[1]`, http.StatusBadRequest, demo.CodeInvalidJSON},
		{"unknown field", `{"failAt": 2}`, http.StatusBadRequest, demo.CodeInvalidJSON},
		{"two values", `{}{}`, http.StatusBadRequest, demo.CodeInvalidJSON},
		{"wrong type", `{"steps": "8"}`, http.StatusBadRequest, demo.CodeInvalidJSON},
		{"negative steps", `{"steps": -1}`, http.StatusBadRequest, demo.CodeInvalidSteps},
		{"too many steps", `{"steps": 9}`, http.StatusBadRequest, demo.CodeInvalidSteps},
		{"negative failAtStep", `{"failAtStep": -1}`, http.StatusBadRequest, demo.CodeInvalidFailStep},
		{"failAtStep past the steps", `{"failAtStep": 4, "steps": 3}`, http.StatusBadRequest, demo.CodeInvalidFailStep},
		{"failAtStep past the default steps", `{"failAtStep": 9}`, http.StatusBadRequest, demo.CodeInvalidFailStep},
		{"zero stepScale", `{"stepScale": 0}`, http.StatusBadRequest, demo.CodeInvalidScale},
		{"stepScale too small", `{"stepScale": 0.01}`, http.StatusBadRequest, demo.CodeInvalidScale},
		{"stepScale too large", `{"stepScale": 11}`, http.StatusBadRequest, demo.CodeInvalidScale},
		{"body too large", `{"steps": 8` + strings.Repeat(" ", 5000) + `}`, http.StatusRequestEntityTooLarge, demo.CodeBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, d, http.MethodPost, "/demo/jobs", tc.body)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if e := decode[apiError](t, w); e.Code != tc.code || e.Error == "" {
				t.Errorf("answer %+v, want code %s", e, tc.code)
			}
		})
	}
	if keys, err := rdb.Keys(context.Background(), "ssegate:*").Result(); err != nil || len(keys) != 0 || d.Running() != 0 {
		t.Errorf("a refused request left keys %v (%v) or %d running jobs", keys, err, d.Running())
	}
}

// TestCreateJobCapAndClose fills the only job slot, is refused beyond it,
// then closes the Demo: the running job fails with WORKER_STOPPED (its
// watchers are not left waiting) and later requests are refused.
func TestCreateJobCapAndClose(t *testing.T) {
	t.Parallel()
	d, rdb := newDemo(t, demo.WithMaxJobs(1), demo.WithStepScale(10)) // a job would take minutes
	w := do(t, d, http.MethodPost, "/demo/jobs", "")
	if w.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	job := decode[created](t, w).JobID

	w = do(t, d, http.MethodPost, "/demo/jobs", `{"stepScale": 0.1}`)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("beyond the cap: status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if e := decode[apiError](t, w); e.Code != demo.CodeDemoBusy {
		t.Errorf("beyond the cap: %+v", e)
	}

	start := time.Now()
	d.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %v", took)
	}
	if n := d.Running(); n != 0 {
		t.Errorf("%d jobs running after Close", n)
	}
	msgs := published(t, rdb, job)
	var e event.ErrorEvent
	if err := json.Unmarshal([]byte(msgs[len(msgs)-1].Values["data"].(string)), &e); err != nil || e.Code != demo.CodeWorkerStopped {
		t.Errorf("last event of the stopped job: %v (%v)", msgs[len(msgs)-1].Values, err)
	}

	w = do(t, d, http.MethodPost, "/demo/jobs", "")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("after Close: status %d", w.Code)
	}
	if e := decode[apiError](t, w); e.Code != demo.CodeDemoClosed {
		t.Errorf("after Close: %+v", e)
	}
	d.Close() // idempotent
}

// TestCreateJobRedisDown answers 503 JSON when the job cannot be
// registered, and frees the slot.
func TestCreateJobRedisDown(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	d := demo.New(publisher.New(rdb), nil, demo.WithMaxJobs(1))
	t.Cleanup(d.Close)
	for range 2 {
		w := do(t, d, http.MethodPost, "/demo/jobs", "")
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if e := decode[apiError](t, w); e.Code != demo.CodeRedis {
			t.Errorf("answer %+v", e)
		}
	}
	if d.Running() != 0 {
		t.Errorf("%d jobs running", d.Running())
	}
}

func TestServesPageAndAssets(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	d := demo.New(publisher.New(rdb), nil)
	t.Cleanup(d.Close)
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType        string
		contains           string
		code               string
	}{
		{"page", http.MethodGet, "/", 200, "text/html", "Generate report", ""},
		{"page HEAD", http.MethodHead, "/", 200, "text/html", "", ""},
		{"script", http.MethodGet, "/demo/static/app.js", 200, "javascript", "new EventSource(", ""},
		{"stylesheet", http.MethodGet, "/demo/static/app.css", 200, "text/css", ".progress", ""},
		{"the page under its own name", http.MethodGet, "/demo/static/index.html", 200, "text/html", "<template", ""},
		{"unknown asset", http.MethodGet, "/demo/static/nope.js", 404, "application/json", "", demo.CodeNotFound},
		{"asset directory", http.MethodGet, "/demo/static/", 404, "application/json", "", demo.CodeNotFound},
		{"path escape", http.MethodGet, "/demo/static/../demo.go", 404, "application/json", "", demo.CodeNotFound},
		{"unknown route", http.MethodGet, "/demo/other", 404, "application/json", "", demo.CodeNotFound},
		{"POST page", http.MethodPost, "/", 405, "application/json", "", demo.CodeMethod},
		{"GET jobs", http.MethodGet, "/demo/jobs", 405, "application/json", "", demo.CodeMethod},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/", nil)
			req.URL.Path = tc.path // as the router passes it, unclean paths included
			w := httptest.NewRecorder()
			d.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.Contains(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			if !strings.Contains(w.Body.String(), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			if tc.code != "" {
				if e := decode[apiError](t, w); e.Code != tc.code {
					t.Errorf("answer %+v, want code %s", e, tc.code)
				}
			}
			if tc.status == 200 && w.Header().Get("Content-Security-Policy") == "" {
				t.Error("no Content-Security-Policy")
			}
			if tc.status == 405 && w.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}
