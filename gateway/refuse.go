package gateway

import (
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// Reasons a stream is refused as transient: the label of
// ssegate_refused_streams_total, and the comment of a retry-only stream.
const (
	refuseDraining = "draining"
	refuseFull     = "connection_limit"
	refuseJobFull  = "job_connection_limit"
	refuseRedis    = "redis_unavailable"
	refuseIPFull   = "ip_connection_limit"
)

// CodeTooManyIPConnections is the code of a stream refused at
// MaxConnectionsPerIP.
const CodeTooManyIPConnections = "TOO_MANY_IP_CONNECTIONS"

var refusals = map[string]struct{ code, msg string }{
	refuseDraining: {CodeDraining, "this instance is shutting down; reconnect"},
	refuseFull:     {CodeTooManyConnections, "this instance has too many open streams; reconnect later"},
	refuseJobFull:  {CodeTooManyJobClients, "this job has too many open streams on this instance; reconnect later"},
	refuseRedis:    {CodeRedisUnavailable, "Redis is unavailable; reconnect later"},
	refuseIPFull:   {CodeTooManyIPConnections, "too many open streams from this address; reconnect later"},
}

// refuse turns a stream away for a transient reason. An EventSource gives up
// for good on any non-200 answer, so a client that accepts
// text/event-stream gets a 200 stream carrying only a jittered retry hint
// and a comment naming the reason, and comes back later (perhaps to another
// instance). Other clients get 503 JSON with Retry-After.
func (sr *streamRequest) refuse(reason string) error {
	s := sr.s
	s.metrics.refusals.WithLabelValues(reason).Inc()
	r := refusals[reason]
	retry := jitter(s.cfg.Retry)
	if reason == refuseFull || reason == refuseJobFull || reason == refuseIPFull {
		retry = jitter(s.refusedBackoff())
	}
	sr.answered(answerRefused)
	if acceptsEventStream(sr.r) {
		setStreamHeaders(sr.w.Header())
		sr.w.WriteHeader(http.StatusOK)
		m := event.Message{Retry: retry, Comment: reason + ": " + r.msg}
		if id, err := protocol.ParseID(sr.r.Header.Get("Last-Event-ID")); err == nil {
			m.ID = id.String() // keep the client's resume point (see open)
		}
		if b, err := lines(m); err == nil {
			_, _ = sr.w.Write(b)
			_ = http.NewResponseController(sr.w).Flush()
		}
		return nil
	}
	sr.w.Header().Set("Retry-After", retryAfterSeconds(retry))
	status := http.StatusServiceUnavailable
	if reason == refuseIPFull {
		status = http.StatusTooManyRequests // the client's doing, not the instance's
	}
	return &apiError{Status: status, Message: r.msg, Code: r.code}
}

// refusedBackoff is the retry hint of a stream refused at a connection
// limit: the base Retry while few are refused, growing with the refusals
// of about the last second (Retry × refusals/2, at most a minute), so that
// clients refused at once come back spread out: a thousand refused clients
// settle at about 1,500 returns a minute instead of 15,000 at the base.
func (s *Server) refusedBackoff() time.Duration {
	n := int64(s.refused.add(time.Now()))
	d := s.cfg.Retry * time.Duration(max(1, n/2))
	return min(d, max(time.Minute, s.cfg.Retry))
}

// refusalRate counts refusals with a count that decays by e each second:
// at a steady rate it settles at the refusals per second, and after a
// burst it holds the burst, then fades, with no turn of a clock second to
// restart it. Refusals are rare next to streams, so a mutex is cheap.
type refusalRate struct {
	mu sync.Mutex
	at time.Time // the last refusal
	n  float64
}

// add counts one refusal at now and returns the decayed count.
func (r *refusalRate) add(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dt := now.Sub(r.at); !r.at.IsZero() && dt > 0 {
		r.n *= math.Exp(-dt.Seconds())
	}
	r.at = now
	r.n++
	return r.n
}

// redisFailed counts a failed Redis read and refuses the stream as transient.
func (sr *streamRequest) redisFailed(op string, err error) error {
	if sr.r.Context().Err() != nil {
		return nil // the client left; the read was cancelled with it
	}
	sr.s.metrics.redisErrors.WithLabelValues(op).Inc()
	sr.s.log.Warn("redis read failed", "op", op, "err", err)
	return sr.refuse(refuseRedis)
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(strings.ToLower(v), "text/event-stream") {
			return true
		}
	}
	return false
}
