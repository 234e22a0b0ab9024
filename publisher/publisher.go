// Package publisher is the library report workers use to publish a job's
// events. Each call is one atomic Redis script (see package protocol): when
// it returns nil, the event is in the job's stream and state hash and has
// been sent on its live channel. Nothing is buffered in the worker.
//
// A Publisher and its Jobs are safe for concurrent use; a job's events are
// ordered by when Redis ran each call.
package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// Errors of the publisher. Inputs are checked before anything reaches Redis;
// the last three come from the publish script. Test them with errors.Is.
var (
	ErrInvalidJobID    = protocol.ErrInvalidJobID
	ErrInvalidStatus   = errors.New("status must be pending or processing (finish a job with Complete or Fail)")
	ErrInvalidStep     = errors.New("progress needs total > 0 and 0 <= step <= total")
	ErrInvalidReport   = errors.New("report is not valid JSON")
	ErrReportTooLarge  = errors.New("report larger than the limit")
	ErrInvalidFailure  = errors.New("a failure needs a message and a code")
	ErrInvalidReportID = errors.New("report ID must not be empty")

	ErrJobExists   = protocol.ErrJobExists   // Register of a job that exists
	ErrJobNotFound = protocol.ErrJobNotFound // publish to a job never registered (or expired)
	ErrJobFinished = protocol.ErrJobFinished // publish after Complete or Fail
	// ErrIdempotencyKeyReused: a publish with the same idempotency key, but
	// another event, ran within the window.
	ErrIdempotencyKeyReused  = protocol.ErrIdempotencyKeyReused
	ErrInvalidIdempotencyKey = protocol.ErrBadIdempotencyKey
)

// DefaultReportMaxBytes is the largest report accepted unless changed with
// WithReportMaxBytes. It matches the gateway's default delivery limit.
const DefaultReportMaxBytes = 1 << 20

// Publisher publishes events of jobs to one Redis deployment.
type Publisher struct {
	rdb     redis.UniversalClient
	keys    protocol.Keys
	opts    options
	sharded bool // rdb is a Cluster client: live messages go out with SPUBLISH
}

type options struct {
	prefix         string
	maxLen         int64
	retention      time.Duration
	staleTTL       time.Duration
	reportMaxBytes int
	idemWindow     time.Duration
	now            func() time.Time
}

// Option configures a Publisher.
type Option func(*options)

// WithKeyPrefix sets the key prefix. The default is "ssegate"; gateways must
// use the same one.
func WithKeyPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithMaxLen sets the approximate number of events kept in a job's stream.
// The default is 1000.
func WithMaxLen(n int64) Option { return func(o *options) { o.maxLen = n } }

// WithRetention sets how long a job's keys live after its terminal event.
// The default is 1 hour.
func WithRetention(d time.Duration) Option { return func(o *options) { o.retention = d } }

// WithStaleTTL sets how long a running job's keys live after its latest
// event. The default is 24 hours.
func WithStaleTTL(d time.Duration) Option { return func(o *options) { o.staleTTL = d } }

// WithReportMaxBytes sets the largest report Complete accepts. The default
// is DefaultReportMaxBytes (1 MiB).
func WithReportMaxBytes(n int) Option { return func(o *options) { o.reportMaxBytes = n } }

// WithIdempotencyWindow sets how long a publish made with an idempotency key
// (Job.WithIdempotencyKey) is remembered. The default is 1 hour.
func WithIdempotencyWindow(d time.Duration) Option { return func(o *options) { o.idemWindow = d } }

// WithClock sets the clock of event timestamps. The default is time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New returns a Publisher writing through rdb (a single, Sentinel or Cluster
// client). On a Cluster client (*redis.ClusterClient, what a redis+cluster://
// URL gives; see package redisurl) live messages go out with SPUBLISH, to
// the job's shard only, as the gateway reads them on a Cluster.
func New(rdb redis.UniversalClient, opts ...Option) *Publisher {
	o := options{
		maxLen:         protocol.DefaultMaxLen,
		retention:      protocol.DefaultRetention,
		staleTTL:       protocol.DefaultStaleTTL,
		reportMaxBytes: DefaultReportMaxBytes,
		idemWindow:     protocol.DefaultIdempotencyWindow,
		now:            time.Now,
	}
	for _, opt := range opts {
		opt(&o)
	}
	_, sharded := rdb.(*redis.ClusterClient)
	return &Publisher{rdb: rdb, keys: protocol.NewKeys(o.prefix), opts: o, sharded: sharded}
}

// Job returns the handle of one job. It does no I/O; an invalid ID is
// reported by each call on the handle.
func (p *Publisher) Job(id string) *Job { return &Job{p: p, id: id} }

// Job publishes the events of one job.
type Job struct {
	p       *Publisher
	id      string
	idemKey string
}

// WithIdempotencyKey returns a handle of the same job whose publishes are
// idempotent under key: a call retried with the same key (after a timeout,
// say, when it is unknown whether the first one ran) returns the first
// call's event ID and publishes nothing, for the publisher's idempotency
// window. The same key with another event fails with
// ErrIdempotencyKeyReused. Give each event its own key, such as
// "step-3"; a handle is for one event.
func (j *Job) WithIdempotencyKey(key string) *Job {
	return &Job{p: j.p, id: j.id, idemKey: key}
}

// ID returns the job ID.
func (j *Job) ID() string { return j.id }

// Register creates the job with status pending and appends that status
// event, so the job exists for gateways. Register it before handing its ID
// to a client. It fails with ErrJobExists if the job exists.
func (j *Job) Register(ctx context.Context) (string, error) {
	return j.publish(ctx, "register", protocol.PublishArgs{
		Op: protocol.OpRegister, Type: event.TypeStatus, Status: event.StatusPending,
	}, event.NewStatus(j.id, event.StatusPending, j.p.opts.now()))
}

// Status publishes a status change: pending or processing. The first
// processing status starts the clock of the progress estimate.
func (j *Job) Status(ctx context.Context, s event.Status) (string, error) {
	if s != event.StatusPending && s != event.StatusProcessing {
		return "", j.wrap("status", fmt.Errorf("%w: got %q", ErrInvalidStatus, s))
	}
	return j.publish(ctx, "status", protocol.PublishArgs{
		Op: protocol.OpPublish, Type: event.TypeStatus, Status: s,
	}, event.NewStatus(j.id, s, j.p.opts.now()))
}

// Step is one progress report: Step of Total steps done, now at Name.
type Step struct {
	Step  int
	Total int
	Name  string
}

// Progress publishes a progress event. The percentage is computed here; the
// estimated time left is computed by Redis from the job's pace (time since
// processing started ÷ steps done × steps left), so it is right whichever
// worker publishes each step. The job becomes processing if it was pending.
func (j *Job) Progress(ctx context.Context, s Step) (string, error) {
	if s.Total <= 0 || s.Step < 0 || s.Step > s.Total {
		return "", j.wrap("progress", fmt.Errorf("%w: got step %d of %d", ErrInvalidStep, s.Step, s.Total))
	}
	return j.publish(ctx, "progress", protocol.PublishArgs{
		Op: protocol.OpPublish, Type: event.TypeProgress, Step: s.Step, Total: s.Total,
	}, event.NewProgress(j.id, s.Step, s.Total, s.Name, j.p.opts.now()))
}

// Complete finishes the job. report is the report's JSON, or nil (or JSON
// null) for none; it is stored in the job's state hash only, and gateways
// send it to the clients that ask for it.
func (j *Job) Complete(ctx context.Context, reportID string, report json.RawMessage) (string, error) {
	if reportID == "" {
		return "", j.wrap("complete", ErrInvalidReportID)
	}
	if string(bytes.TrimSpace(report)) == "null" {
		report = nil // a JSON null is no report
	}
	if report != nil {
		if len(report) > j.p.opts.reportMaxBytes {
			return "", j.wrap("complete", fmt.Errorf("%w: %d bytes, limit %d", ErrReportTooLarge, len(report), j.p.opts.reportMaxBytes))
		}
		if !json.Valid(report) {
			return "", j.wrap("complete", ErrInvalidReport)
		}
	}
	return j.publish(ctx, "complete", protocol.PublishArgs{
		Op: protocol.OpPublish, Type: event.TypeComplete, Report: string(report),
	}, event.NewCompleteRecord(j.id, reportID, report != nil, j.p.opts.now()))
}

// Fail finishes the job as failed with a human message and a machine code;
// retryable tells the client whether trying the job again may help.
func (j *Job) Fail(ctx context.Context, message, code string, retryable bool) (string, error) {
	if message == "" || code == "" {
		return "", j.wrap("fail", ErrInvalidFailure)
	}
	return j.publish(ctx, "fail", protocol.PublishArgs{
		Op: protocol.OpPublish, Type: event.TypeError,
	}, event.NewError(j.id, message, code, retryable, j.p.opts.now()))
}

func (j *Job) publish(ctx context.Context, op string, a protocol.PublishArgs, ev any) (string, error) {
	if !protocol.ValidJobID(j.id) {
		return "", j.wrap(op, ErrInvalidJobID)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return "", j.wrap(op, err)
	}
	o := &j.p.opts
	a.Data, a.MaxLen, a.StaleTTL, a.Retention = string(data), o.maxLen, o.staleTTL, o.retention
	a.Sharded = j.p.sharded
	if j.idemKey != "" {
		if !protocol.ValidIdempotencyKey(j.idemKey) {
			return "", j.wrap(op, ErrInvalidIdempotencyKey)
		}
		a.IdempotencyKey, a.IdempotencyWindow, a.Fingerprint = j.idemKey, o.idemWindow, fingerprint(a, data)
	}
	id, err := protocol.Publish(ctx, j.p.rdb, j.p.keys, j.id, a)
	if err != nil {
		return "", j.wrap(op, err)
	}
	return id, nil
}

// fingerprint identifies an event apart from its timestamp, which a retry
// sets anew: a hash of the operation, the event's JSON without its
// timestamp, and the report.
func fingerprint(a protocol.PublishArgs, data []byte) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return ""
	}
	delete(fields, "timestamp")
	canon, _ := json.Marshal(fields) // sorted keys
	h := sha256.New()
	for _, part := range []string{string(a.Op), string(canon), a.Report} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (j *Job) wrap(op string, err error) error {
	return fmt.Errorf("publisher: %s job %q: %w", op, j.id, err)
}
