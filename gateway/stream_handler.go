package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
)

// A streamRequest is one request to GET /api/reports/{jobId}/stream. It
// counts how it was answered (ssegate_stream_requests_total), once. It
// belongs to the request's goroutine.
type streamRequest struct {
	s      *Server
	w      http.ResponseWriter
	r      *http.Request
	job    string
	q      streamQuery
	remote string
	answer string
	// expires is the exp of the request's token: the stream ends there,
	// told to come back (with a fresh token). Zero without auth.
	expires time.Time
}

// serveStream serves the stream route.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, job string) {
	sr := &streamRequest{s: s, w: w, r: r, job: job, remote: s.clientIP(r)}
	err := sr.serve()
	var ae *apiError
	switch {
	case sr.answer != "":
	case errors.As(err, &ae) && ae.Status == http.StatusBadRequest:
		sr.answered(answerBadRequest)
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		sr.answered(answerNotFound)
	case err == nil:
		sr.answered(answerGone)
	}
	if err != nil {
		writeError(w, r, err)
	}
}

// answered counts how the request was answered, once.
func (sr *streamRequest) answered(a string) {
	if sr.answer == "" {
		sr.answer = a
		sr.s.metrics.requests.WithLabelValues(a).Inc()
	}
}

// An admission is what an admitted stream holds until it ends: its slot
// under MaxConnections, its place in the shutdown registry (Server.streams),
// and, as it gets them, its client in the hub, its open response and its
// taken-over connection. end releases all of it once, whoever calls it
// first: the handler (on its way out, panics included) or, once the handler
// has handed the stream off, the stream's last drain. Its fields are set by
// the handler before the hand-off and only read after it.
type admission struct {
	s       *Server
	job     string
	remote  string
	cl      *client
	js      *jobSub   // set once joined
	w       *writer   // set once the stream is open
	sink    *connSink // set once taken over
	unwatch func()    // stops the close watch of sink
	once    sync.Once
	mem     streamMem
}

// streamMem is where an admitted stream's state lives: allocated with its
// admission as one block, instead of four objects of four sizes. A stream
// lives for minutes among the garbage of many short requests; objects of
// its own, each in a span shared with that garbage, would keep those spans
// in use long after the garbage is collected (measured: 4.7 KiB of heap in
// use per idle stream for 2.7 KiB live, before; docs/benchmarks.md).
type streamMem struct {
	cl   client
	w    writer
	sink connSink
	st   stream
}

func (a *admission) end(reason string) {
	a.once.Do(func() {
		if a.unwatch != nil {
			a.unwatch()
		}
		if a.sink != nil {
			a.sink.end()
			a.s.track(a.sink, false)
		}
		if a.w != nil {
			a.s.closed(a.job, a.remote, a.w, reason)
		}
		if a.js != nil {
			a.s.hub.leave(a.js, a.cl)
		}
		a.s.ips.done(a.remote, a.s.cfg.MaxConnectionsPerIP)
		a.s.active.Add(-1)
		a.s.streams.Done()
	})
}

func (sr *streamRequest) serve() error {
	s, r := sr.s, sr.r
	claims, aerr := s.checkJob(r, sr.job, grantWatch)
	if aerr != nil {
		return aerr
	}
	if claims != nil {
		sr.expires = claims.ExpiresAt.Time
	}
	q, aerr := parseStreamQuery(r.URL.Query(), r.Header.Get("Last-Event-ID"), s.cfg.DefaultTimeout, s.cfg.MaxTimeout)
	if aerr != nil {
		return aerr
	}
	sr.q = q
	if s.hub.draining.Load() {
		return sr.refuse(refuseDraining)
	}
	// Unknown and finished jobs are answered before admission, from the
	// state alone: only a stream that stays open takes a slot, so a full
	// instance still ends finished jobs' streams and answers 404s. A job
	// this instance is subscribed to already was running a moment ago;
	// the read after joining decides (and a storm of streams of one job
	// reads it once, there: see sharedRead). So does a resume that can be
	// admitted: its client watched the job a moment ago, so it most likely
	// runs still, and a reconnect storm then costs each job's first
	// stream no read of its own.
	lookUp := !s.hub.watched(sr.job)
	if lookUp && !q.resume {
		if _, answered, err := sr.lookUpShared(); answered {
			return err
		}
	}
	if refusal := sr.admit(); refusal != "" {
		if lookUp && q.resume {
			if _, answered, err := sr.lookUpShared(); answered {
				return err
			}
		}
		return sr.refuse(refusal)
	}
	// From here on the stream counts; whatever it holds is released by
	// a.end, here or, once handed off, by the stream's own end.
	a := &admission{s: s, job: strings.Clone(sr.job), remote: strings.Clone(sr.remote)}
	handedOff := false
	reason := reasonClientGone
	defer func() {
		if p := recover(); p != nil {
			a.end(reasonPanic)
			panic(p)
		}
		if !handedOff {
			a.end(reason)
		}
	}()
	ctx := r.Context()

	// A running job: attach to its live events first, then read where it
	// stands, so nothing published in between is missed.
	a.cl = &a.mem.cl
	a.cl.init(s.cfg.ClientBuffer, q.includeReport)
	js, err := s.hub.join(ctx, sr.job, a.cl)
	switch {
	case errors.Is(err, errDraining):
		return sr.refuse(refuseDraining)
	case errors.Is(err, errJobFull):
		if _, answered, err := sr.lookUp(); answered { // finished meanwhile?
			return err
		}
		return sr.refuse(refuseJobFull)
	case errors.Is(err, errNotReady):
		return sr.refuse(refuseRedis)
	case err != nil:
		return nil // the client left while waiting
	}
	a.js = js

	start, err := s.hub.start(ctx, js, a.cl, q.resume, q.lastID)
	if start.finished && err == nil {
		// It ended since the read: answered as a finished job, from
		// where it stands now.
		start.st, err = s.store.state(ctx, sr.job)
	}
	st, answered, err := sr.decide(start.st, err)
	if answered {
		return err
	}
	o := &openStream{job: a.job, q: q, cl: a.cl, js: js, st: st,
		history: start.history, found: start.found, more: start.more}

	a.w, a.sink = sr.open(&a.mem)
	if a.sink == nil {
		reason = s.begin(ctx, a.w, o)
		if reason == "" {
			reason = a.w.loop(ctx, a.cl, &s.beats, s.cfg.Heartbeat, sr.timeout(a.w))
		}
		return nil
	}
	s.track(a.sink, true)
	a.unwatch = s.watchPeer(a.sink.conn, func() { a.cl.kick(reasonClientGone, 0) })
	if s.hookTakenOver != nil {
		s.hookTakenOver()
	}
	// The request's context ends when this handler returns: the stream is
	// ended by the close watcher, the hub (which kicks every client when
	// it stops) or its own timer instead.
	ctx = context.Background()
	if reason = s.begin(ctx, a.w, o); reason != "" {
		return nil
	}
	// The replay or snapshot is written; from now on the stream holds no
	// goroutine of its own while it waits (see stream).
	handedOff = true
	a.mem.st.init(a.w, a.cl, &s.beats, s.cfg.Heartbeat, sr.timeout(a.w), a.end).start(ctx)
	return nil
}

// admit takes the stream's slot under MaxConnectionsPerIP and
// MaxConnections, or returns the refusal.
func (sr *streamRequest) admit() string {
	s := sr.s
	if !s.ips.add(sr.remote, s.cfg.MaxConnectionsPerIP) {
		return refuseIPFull
	}
	if !s.admit() {
		s.ips.done(sr.remote, s.cfg.MaxConnectionsPerIP)
		return refuseFull
	}
	return ""
}

// timeout is how long the stream stays open from now: the asked-for
// timeout, or less if the token expires first, in which case w ends the
// stream with a retry hint (see writer.timedOut).
func (sr *streamRequest) timeout(w *writer) time.Duration {
	d := sr.q.timeout
	if !sr.expires.IsZero() {
		if left := time.Until(sr.expires); left < d {
			d, w.expiryRetry = max(left, 0), sr.s.cfg.Retry
		}
	}
	return d
}

// lookUp reads where the job stands and answers the request when that alone
// decides it: Redis failing (transient), an unknown job (404), a finished
// one (its result, or 204). answered reports that it did; err is then the
// handler's result.
func (sr *streamRequest) lookUp() (st *jobState, answered bool, err error) {
	return sr.decide(sr.s.store.state(sr.r.Context(), sr.job))
}

// lookUpShared is lookUp sharing the read with the requests for the job
// that wait for one already: a storm of first requests for a job that is
// not watched here yet reads its state once, not once each.
func (sr *streamRequest) lookUpShared() (st *jobState, answered bool, err error) {
	ctx := sr.r.Context()
	ch := sr.s.lookUps.DoChan(sr.job, func() (any, error) {
		// Not bounded by this request: the others wait for it too.
		return sr.s.store.state(context.WithoutCancel(ctx), sr.job)
	})
	select {
	case res := <-ch:
		st, _ := res.Val.(*jobState)
		return sr.decide(st, res.Err)
	case <-ctx.Done():
		return nil, true, nil // the client left
	}
}

// decide is lookUp's answer from a read of the job's state.
func (sr *streamRequest) decide(st *jobState, err error) (_ *jobState, answered bool, _ error) {
	switch {
	case err != nil:
		return nil, true, sr.redisFailed("state", err)
	case st == nil:
		return nil, true, &apiError{Status: http.StatusNotFound, Message: "no such job", Code: CodeJobNotFound}
	case st.status.Terminal():
		return nil, true, sr.finished(st)
	}
	return st, false, nil
}

// finished answers a stream request for a completed or failed job: 204 to
// a client that already has the terminal event (an EventSource stops
// reconnecting on it), else what the client misses, then close.
func (sr *streamRequest) finished(st *jobState) error {
	s, q, job := sr.s, sr.q, sr.job
	if q.resume && q.lastID == st.lastID {
		s.log.Debug("stream request after the terminal event: 204", "job", job, "remote", sr.remote)
		sr.answered(answerNoContent)
		sr.w.WriteHeader(http.StatusNoContent)
		return nil
	}
	ctx := sr.r.Context()
	var history []historyEntry
	found, more := false, false
	if q.resume {
		var err error
		if history, found, more, err = s.finishedHistory(ctx, job, q.lastID); err != nil {
			return sr.redisFailed("replay", err)
		}
	}
	w, _ := sr.open(nil)
	reason := reasonFinished
	defer func() { s.closed(job, sr.remote, w, reason) }()
	if q.resume && found {
		w.last = q.lastID
		if done, r := s.replay(ctx, w, job, q, history, more); done {
			reason = r
			return nil
		}
		// The stream ended before its terminal event: only if it expired
		// while we read. Fall through to the result.
	} else if q.resume {
		w.raw(s.resetEvent(job), event.TypeReset)
	}
	if err := s.result(w, job, q, st); err != nil {
		reason = w.failed(nil, err)
		return nil
	}
	if err := w.flush(); err != nil {
		reason = reasonClientGone
	}
	return nil
}

// open starts a 200 event stream: headers, then the retry hint (and the
// resume point) as the first lines of the block that the first event
// completes, flushed at once so the client knows the stream is up. With
// mem, the writer is mem's and an HTTP/1.x connection is taken over from
// net/http into mem's sink (see conn.go), which is returned: the stream then
// runs without this handler (see stream).
func (sr *streamRequest) open(mem *streamMem) (*writer, *connSink) {
	s, q := sr.s, sr.q
	h := sr.w.Header()
	setStreamHeaders(h)
	w := new(writer)
	if mem != nil {
		w = &mem.w
	}
	w.writeTimeout, w.metrics = s.cfg.WriteTimeout, s.metrics
	var sink *connSink
	var err error
	if mem != nil && !s.cfg.NoTakeOver {
		sink, err = takeOver(sr.w, sr.r, h, http.StatusOK, &mem.sink)
	}
	switch {
	case err != nil:
		// Taken over, then lost while writing the head: the stream ends
		// at its first write, as for any client gone.
		w.out = failedSink{err}
	case sink != nil:
		w.out = sink
		tookOver(sr.r, http.StatusOK)
	default:
		sr.w.WriteHeader(http.StatusOK)
		w.out = newResponseSink(sr.w)
	}
	if q.resume {
		// Repeat the resume point: a parser that starts each connection
		// with an empty ID would otherwise forget it at the first blank
		// line, and resume from nothing next time.
		hint, _ := lines(event.Message{Retry: s.cfg.Retry, ID: q.lastID.String()})
		w.write(hint)
	} else {
		w.write(s.retryHint)
	}
	_ = w.flush()
	sr.answered(answerStream)
	s.metrics.opened.Inc()
	s.metrics.connections.Inc()
	s.log.Debug("stream opened", "job", sr.job, "remote", sr.remote, "resume", q.resume, "last_event_id", lastIDAttr(q), "taken_over", sink != nil)
	return w, sink
}

func (s *Server) closed(job, remote string, w *writer, reason string) {
	s.metrics.connections.Dec()
	s.metrics.closed.WithLabelValues(reason).Inc()
	if w.err != nil {
		s.log.Debug("stream closed", "job", job, "remote", remote, "reason", reason, "events", w.sent, "err", w.err)
		return
	}
	s.log.Debug("stream closed", "job", job, "remote", remote, "reason", reason, "events", w.sent)
}

func lastIDAttr(q streamQuery) string {
	if !q.resume {
		return ""
	}
	return q.lastID.String()
}

// setStreamHeaders sets the headers of every event stream response. The
// Connection header is left to whoever ends the response: net/http, or
// takeOver, which closes the connection at the end and says so.
func setStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// admit reserves a slot under MaxConnections and a place in the shutdown
// registry; admission.end gives both back.
func (s *Server) admit() bool {
	n := s.active.Add(1)
	if s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		return false
	}
	s.streams.Add(1)
	return true
}

// failedSink is the sink of a connection lost before the stream began.
type failedSink struct{ err error }

func (f failedSink) Write([]byte) (int, error)        { return 0, f.err }
func (f failedSink) Flush() error                     { return f.err }
func (f failedSink) SetWriteDeadline(time.Time) error { return nil }

// responseSink writes a stream through net/http's ResponseWriter.
type responseSink struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newResponseSink(w http.ResponseWriter) responseSink {
	return responseSink{w: w, rc: http.NewResponseController(w)}
}

func (s responseSink) Write(b []byte) (int, error)        { return s.w.Write(b) }
func (s responseSink) Flush() error                       { return s.rc.Flush() }
func (s responseSink) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }
