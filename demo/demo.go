package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ssegate/ssegate/publisher"
)

//go:embed static
var staticFiles embed.FS

// Defaults of the options.
const (
	DefaultMaxJobs   = 16
	DefaultStepScale = 1.0
)

// Limits of a POST /demo/jobs request.
const (
	MaxSteps     = len(stages) // a job has 1 to MaxSteps steps (default all)
	MinStepScale = 0.1         // the request's stepScale, relative to the server's
	MaxStepScale = 10.0
	maxBodyBytes = 4 << 10
)

// Error codes of the JSON error body, beside the gateway's.
const (
	CodeInvalidJSON     = "INVALID_JSON"
	CodeInvalidSteps    = "INVALID_STEPS"
	CodeInvalidFailStep = "INVALID_FAIL_AT_STEP"
	CodeInvalidScale    = "INVALID_STEP_SCALE"
	CodeBodyTooLarge    = "REQUEST_TOO_LARGE"
	CodeDemoBusy        = "DEMO_BUSY"
	CodeDemoClosed      = "DEMO_CLOSED"
	CodeRedis           = "REDIS_UNAVAILABLE"
	CodeNotFound        = "NOT_FOUND"
	CodeMethod          = "METHOD_NOT_ALLOWED"
)

// Demo serves the demo page and runs simulated report jobs. Build it with
// New; stop it with Close.
type Demo struct {
	pub    *publisher.Publisher
	log    *slog.Logger
	opts   options
	assets fs.FS

	ctx    context.Context // cancelled by Close; parent of every job
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per running job goroutine

	mu      sync.Mutex // guards running, closed
	running int
	closed  bool
}

type options struct {
	stepScale float64
	maxJobs   int
}

// Option configures a Demo.
type Option func(*options)

// WithStepScale multiplies every step duration of the simulated jobs. The
// default is 1 (a job takes about 12 s); tests use 0.05 or less. A scale
// that is not positive is ignored.
func WithStepScale(f float64) Option {
	return func(o *options) {
		if f > 0 && !math.IsInf(f, 0) {
			o.stepScale = f
		}
	}
}

// WithMaxJobs caps the simulated jobs that run at once; POST /demo/jobs
// beyond it answers 503. The default is DefaultMaxJobs (16). A value below
// 1 is ignored.
func WithMaxJobs(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.maxJobs = n
		}
	}
}

// New returns a Demo that publishes its jobs through p and logs to log (nil:
// discard).
func New(p *publisher.Publisher, log *slog.Logger, opts ...Option) *Demo {
	o := options{stepScale: DefaultStepScale, maxJobs: DefaultMaxJobs}
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	assets, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded directory exists at build time
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Demo{pub: p, log: log, opts: o, assets: assets, ctx: ctx, cancel: cancel}
}

// Close cancels the running simulated jobs and waits for their goroutines.
// Each cancelled job is failed with code WORKER_STOPPED. Later POST
// /demo/jobs requests get 503. Close is idempotent.
func (d *Demo) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// Running returns how many simulated jobs are running.
func (d *Demo) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// ServeHTTP serves the page, its assets and POST /demo/jobs.
func (d *Demo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		d.serveAsset(w, r, "index.html")
	case strings.HasPrefix(p, "/demo/static/"):
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		d.serveAsset(w, r, strings.TrimPrefix(p, "/demo/static/"))
	case p == "/demo/jobs":
		if !allowMethods(w, r, http.MethodPost) {
			return
		}
		d.createJob(w, r)
	default:
		writeError(w, http.StatusNotFound, CodeNotFound, "no such route")
	}
}

// serveAsset serves one embedded file. The page has no inline script or
// style, so a strict Content-Security-Policy holds.
func (d *Demo) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	if !fs.ValidPath(name) || name == "." {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such file")
		return
	}
	b, err := fs.ReadFile(d.assets, name) // a directory fails here too
	if err != nil {
		writeError(w, http.StatusNotFound, CodeNotFound, "no such file")
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// jobRequest is the optional body of POST /demo/jobs.
type jobRequest struct {
	FailAtStep int      `json:"failAtStep"` // 0: succeed; else fail during this step
	Steps      int      `json:"steps"`      // 0: MaxSteps
	StepScale  *float64 `json:"stepScale"`  // relative to the server's scale; nil: 1
}

// jobResponse is the body of a 201 answer.
type jobResponse struct {
	JobID      string `json:"jobId"`
	StreamURL  string `json:"streamUrl"`
	Steps      int    `json:"steps"`
	FailAtStep int    `json:"failAtStep,omitempty"`
}

func (d *Demo) createJob(w http.ResponseWriter, r *http.Request) {
	req, status, code, msg := parseJobRequest(w, r)
	if code != "" {
		writeError(w, status, code, msg)
		return
	}
	spec := jobSpec{steps: req.Steps, failAt: req.FailAtStep, scale: d.opts.stepScale}
	if req.StepScale != nil {
		spec.scale *= *req.StepScale
	}

	if code, msg := d.reserve(); code != "" {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, code, msg)
		return
	}
	started := false
	defer func() {
		if !started {
			d.release()
		}
	}()

	job := d.pub.Job("demo-" + randomHex(6))
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	registered, err := job.Register(ctx)
	cancel()
	if err != nil {
		d.log.Warn("demo: register job", "job", job.ID(), "err", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, CodeRedis, "could not register the job; try again")
		return
	}
	started = true
	go func() {
		defer d.release()
		d.run(d.ctx, job, spec)
	}()
	d.log.Info("demo job started", "job", job.ID(), "steps", spec.steps, "fail_at_step", spec.failAt, "step_scale", spec.scale)

	q := url.Values{"includeReport": {"true"}, "lastEventId": {registered}}
	resp := jobResponse{
		JobID:      job.ID(),
		StreamURL:  "/api/reports/" + job.ID() + "/stream?" + q.Encode(),
		Steps:      spec.steps,
		FailAtStep: spec.failAt,
	}
	w.Header().Set("Location", "/api/reports/"+job.ID())
	writeJSON(w, http.StatusCreated, resp)
}

// parseJobRequest reads and checks the optional body. A non-empty code
// means the request is refused with status, code and msg.
func parseJobRequest(w http.ResponseWriter, r *http.Request) (req jobRequest, status int, code, msg string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)
		}
		return req, http.StatusBadRequest, CodeInvalidJSON, "could not read the request body"
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, http.StatusBadRequest, CodeInvalidJSON, "invalid JSON body: " + err.Error()
		}
		if dec.More() {
			return req, http.StatusBadRequest, CodeInvalidJSON, "invalid JSON body: more than one value"
		}
	}
	if req.Steps == 0 {
		req.Steps = MaxSteps
	}
	if req.Steps < 1 || req.Steps > MaxSteps {
		return req, http.StatusBadRequest, CodeInvalidSteps, fmt.Sprintf("steps must be between 1 and %d", MaxSteps)
	}
	if req.FailAtStep < 0 || req.FailAtStep > req.Steps {
		return req, http.StatusBadRequest, CodeInvalidFailStep, fmt.Sprintf("failAtStep must be 0 (succeed) or between 1 and steps (%d)", req.Steps)
	}
	if s := req.StepScale; s != nil && !(*s >= MinStepScale && *s <= MaxStepScale) {
		return req, http.StatusBadRequest, CodeInvalidScale,
			"stepScale must be between " + strconv.FormatFloat(MinStepScale, 'g', -1, 64) + " and " + strconv.FormatFloat(MaxStepScale, 'g', -1, 64)
	}
	return req, 0, "", ""
}

// reserve takes a job slot, or says why there is none.
func (d *Demo) reserve() (code, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return CodeDemoClosed, "the demo is shutting down"
	case d.running >= d.opts.maxJobs:
		return CodeDemoBusy, fmt.Sprintf("%d demo jobs are running, the most this server allows; try again shortly", d.running)
	}
	d.running++
	d.wg.Add(1)
	return "", ""
}

func (d *Demo) release() {
	d.mu.Lock()
	d.running--
	d.mu.Unlock()
	d.wg.Done()
}

func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, CodeMethod, "method not allowed")
	return false
}

// writeError answers the gateway's JSON error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal error","code":"INTERNAL"}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
