package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

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
)

var refusals = map[string]struct{ code, msg string }{
	refuseDraining: {CodeDraining, "this instance is shutting down; reconnect"},
	refuseFull:     {CodeTooManyConnections, "this instance has too many open streams; reconnect later"},
	refuseJobFull:  {CodeTooManyJobClients, "this job has too many open streams on this instance; reconnect later"},
	refuseRedis:    {CodeRedisUnavailable, "Redis is unavailable; reconnect later"},
}

// handleStream serves GET /api/reports/:jobId/stream and counts its answer
// (ssegate_stream_requests_total).
func (s *Server) handleStream(c echo.Context) error {
	err := s.stream(c)
	defer func() {
		if c.Response().Writer == nil {
			// Taken over: Echo's pooled context must not hold the request
			// and net/http's response until the pool is next emptied.
			c.Reset(nil, nil)
		}
	}()
	var ae *apiError
	switch {
	case c.Get(answerKey) != nil:
	case errors.As(err, &ae) && ae.Status == http.StatusBadRequest:
		s.answer(c, answerBadRequest)
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		s.answer(c, answerNotFound)
	case err == nil:
		s.answer(c, answerGone)
	}
	return err
}

// answerKey holds, in the Echo context, how a stream request was answered.
const answerKey = "ssegate.answer"

// answer counts how a stream request was answered, once.
func (s *Server) answer(c echo.Context, a string) {
	if c.Get(answerKey) == nil {
		c.Set(answerKey, a)
		s.metrics.requests.WithLabelValues(a).Inc()
	}
}

func (s *Server) stream(c echo.Context) error {
	req := c.Request()
	job := c.Param("jobId")
	if !protocol.ValidJobID(job) {
		return badRequest(CodeInvalidJobID, protocol.ErrInvalidJobID.Error())
	}
	q, aerr := parseStreamQuery(req.URL.Query(), req.Header.Get("Last-Event-ID"), s.cfg.DefaultTimeout, s.cfg.MaxTimeout)
	if aerr != nil {
		return aerr
	}
	if s.hub.draining.Load() {
		return s.refuse(c, refuseDraining)
	}
	if !s.admit() {
		return s.refuse(c, refuseFull)
	}
	// What is held from here on is released when the stream ends, by this
	// goroutine or, once the connection is taken over, by the stream's own.
	handedOff := false
	defer func() {
		if !handedOff {
			s.active.Add(-1)
		}
	}()
	ctx := req.Context()

	// A first look without subscribing: unknown and finished jobs are
	// answered from the state alone. A job this instance is subscribed to
	// already was running a moment ago; the read after joining decides.
	if !s.hub.live(job) {
		if _, answered, err := s.lookUp(c, job, q); answered {
			return err
		}
	}

	// A running job: attach to its live events first, then read where it
	// stands, so nothing published in between is missed.
	cl := newClient(s.cfg.ClientBuffer, q.includeReport)
	js, err := s.hub.join(ctx, job, cl)
	switch {
	case errors.Is(err, errDraining):
		return s.refuse(c, refuseDraining)
	case errors.Is(err, errJobFull):
		return s.refuse(c, refuseJobFull)
	case errors.Is(err, errNotReady):
		return s.refuse(c, refuseRedis)
	case err != nil:
		return nil // the client left while waiting
	}
	defer func() {
		if !handedOff {
			s.hub.leave(js, cl)
		}
	}()

	st, answered, err := s.lookUp(c, job, q)
	if answered {
		return err
	}
	// Copies: the request's strings must not stay alive with the stream.
	o := &openStream{job: strings.Clone(job), q: q, remote: strings.Clone(c.RealIP()), cl: cl, js: js, st: st}
	if q.resume {
		entries, ok, err := s.store.after(ctx, job, q.lastID)
		if err != nil {
			return s.redisFailed(c, "replay", err)
		}
		o.history, o.found = s.history(job, entries), ok
	}

	w, sink := s.open(c, job, q, true)
	if sink == nil {
		reason, done := s.begin(ctx, w, o)
		if !done {
			reason = w.loop(ctx, cl, s.cfg.Heartbeat, q.timeout)
		}
		s.closed(o, w, reason)
		return nil
	}
	// The replay or snapshot is written from here; from then on the stream
	// holds no goroutine of its own while it waits (see stream).
	stopWatch := s.watchPeer(sink.conn, func() { cl.kick(reasonClientGone, 0) })
	// The request's context ends when this handler returns: the stream is
	// ended by the close watcher, the hub (which kicks every client when
	// it stops) or its own timer instead.
	ctx = context.Background()
	handedOff = true
	s.track(sink, true)
	s.streams.Add(1)
	end := func(reason string) {
		stopWatch()
		sink.end()
		s.track(sink, false)
		s.closed(o, w, reason)
		s.hub.leave(js, cl)
		s.active.Add(-1)
		s.streams.Done()
	}
	if reason, done := s.begin(ctx, w, o); done {
		end(reason)
		return nil
	}
	newStream(w, cl, s.cfg.Heartbeat, q.timeout, end).start(ctx)
	return nil
}

// lookUp reads where the job stands and answers the request when that alone
// decides it: Redis failing (transient), an unknown job (404), a finished
// one (its result, or 204). answered reports that it did; err is then the
// handler's result.
func (s *Server) lookUp(c echo.Context, job string, q streamQuery) (st *jobState, answered bool, err error) {
	st, err = s.store.state(c.Request().Context(), job)
	switch {
	case err != nil:
		return nil, true, s.redisFailed(c, "state", err)
	case st == nil:
		return nil, true, &apiError{Status: http.StatusNotFound, Message: "no such job", Code: CodeJobNotFound}
	case st.status.Terminal():
		return nil, true, s.streamFinished(c, job, q, st)
	}
	return st, false, nil
}

// openStream is a stream of a running job whose answer is decided: what it
// writes first, and where it stands in the hub.
type openStream struct {
	job     string
	q       streamQuery
	remote  string
	cl      *client
	js      *jobSub
	st      *jobState
	history []historyEntry // the first page after the resume point
	found   bool           // the resume point is in the retained history
}

// begin writes the replay or the snapshot and tells the hub where the
// stream stands; live events follow (see stream). done means the
// stream is over already (the replay reached the terminal event, or a write
// failed), and why.
func (s *Server) begin(ctx context.Context, w *writer, o *openStream) (reason string, done bool) {
	switch {
	case o.q.resume && o.found:
		// Exactly the events after the client's, from the stream.
		w.last = o.q.lastID
		if done, reason := s.replay(ctx, w, o.job, o.q, o.history); done {
			return reason, true
		}
	case o.q.resume:
		w.raw(s.resetEvent(o.job), event.TypeReset)
		s.snapshot(w, o.job, o.st)
	default:
		s.snapshot(w, o.job, o.st)
	}
	if err := w.flush(); err != nil {
		return w.failed(o.cl, err), true
	}
	s.hub.started(o.js, o.cl, w.last)
	o.history, o.st = nil, nil // not needed any more
	return "", false
}

// streamFinished answers a stream request for a completed or failed job:
// 204 to a client that already has the terminal event (an EventSource stops
// reconnecting on it), else what the client misses, then close.
func (s *Server) streamFinished(c echo.Context, job string, q streamQuery, st *jobState) error {
	if q.resume && q.lastID == st.lastID {
		s.log.Debug("stream request after the terminal event: 204", "job", job, "remote", c.RealIP())
		s.answer(c, answerNoContent)
		return c.NoContent(http.StatusNoContent)
	}
	ctx := c.Request().Context()
	var history []historyEntry
	found := false
	if q.resume {
		entries, ok, err := s.store.after(ctx, job, q.lastID)
		if err != nil {
			return s.redisFailed(c, "replay", err)
		}
		history, found = s.history(job, entries), ok
	}
	w, _ := s.open(c, job, q, false)
	reason := reasonFinished
	defer func() { s.closed(&openStream{job: job, remote: c.RealIP()}, w, reason) }()
	if q.resume && found {
		w.last = q.lastID
		if done, r := s.replay(ctx, w, job, q, history); done {
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

// historyEntry is a stream entry turned into a frame (or the error that
// made it unreadable).
type historyEntry struct {
	f   *frame
	err error
}

func (s *Server) history(job string, entries []redis.XMessage) []historyEntry {
	out := make([]historyEntry, 0, len(entries))
	for _, e := range entries {
		id, typ, data, err := entryFields(e)
		var f *frame
		if err == nil {
			f, err = s.enc.frame(job, id, typ, data, false)
		}
		out = append(out, historyEntry{f, err})
	}
	return out
}

// replay writes the stream entries after the client's Last-Event-ID, page
// by page. It reports whether the stream is over (the terminal event was
// written, or writing failed) and why.
func (s *Server) replay(ctx context.Context, w *writer, job string, q streamQuery, page []historyEntry) (bool, string) {
	for {
		for _, h := range page {
			if h.err != nil {
				s.log.Warn("skipping unreadable stream entry", "job", job, "err", h.err)
				continue
			}
			terminal, err := w.frame(h.f, q.includeReport, true)
			if err != nil {
				return true, w.failed(nil, err)
			}
			if terminal {
				if err := w.flush(); err != nil {
					return true, reasonClientGone
				}
				return true, reasonFinished
			}
		}
		if len(page) < replayPage {
			return false, ""
		}
		if err := w.flush(); err != nil {
			return true, reasonClientGone
		}
		entries, err := s.store.page(ctx, job, w.last, replayPage)
		if err != nil {
			s.metrics.redisErrors.WithLabelValues("replay").Inc()
			return true, reasonRedis // the client resumes from what it got
		}
		page = s.history(job, entries)
	}
}

// snapshot writes where a running job stands: its status, then its latest
// progress; the last of them carries the job's last event ID, so a resume
// from it is exact.
func (s *Server) snapshot(w *writer, job string, st *jobState) {
	status, _ := json.Marshal(event.StatusEvent{
		Type: event.TypeStatus, JobID: job, Status: st.status, Timestamp: event.At(st.updatedAt),
	})
	statusID := st.lastID
	if st.progress != "" {
		statusID = protocol.ID{}
	}
	if b, err := encode(statusID, event.TypeStatus, status); err == nil {
		w.raw(b, event.TypeStatus)
	}
	if st.progress != "" {
		if b, err := encode(st.lastID, event.TypeProgress, []byte(st.progress)); err == nil {
			w.raw(b, event.TypeProgress)
		}
	}
	w.last = st.lastID
}

// result writes the terminal event of a finished job, with its ID.
func (s *Server) result(w *writer, job string, q streamQuery, st *jobState) error {
	typ := event.TypeComplete
	if st.status == event.StatusFailed {
		typ = event.TypeError
	}
	f, err := s.enc.frame(job, st.lastID, typ, st.result, false)
	if err != nil {
		return err
	}
	w.last = protocol.ID{}
	_, err = w.frame(f, q.includeReport, false)
	return err
}

func (s *Server) resetEvent(job string) []byte {
	b, _ := encodeJSON(protocol.ID{}, event.NewReset(job, event.ResetHistoryTrimmed, time.Now()))
	return b
}

// open starts a 200 event stream: headers, then the retry hint, flushed at
// once so the client knows the stream is up. With takeOver, an HTTP/1.x
// connection is taken over from net/http (see conn.go) and its sink is
// returned: the stream then runs without this handler (see stream).
func (s *Server) open(c echo.Context, job string, q streamQuery, mayTakeOver bool) (*writer, *connSink) {
	setStreamHeaders(c)
	w := &writer{writeTimeout: s.cfg.WriteTimeout, metrics: s.metrics}
	var sink *connSink
	var err error
	if mayTakeOver && !s.cfg.NoTakeOver {
		sink, err = takeOver(c.Response().Writer, c.Request(), c.Response().Header(), http.StatusOK)
	}
	switch {
	case err != nil:
		// Taken over, then lost while writing the head: the stream ends
		// at its first write, as for any client gone.
		c.Response().Committed = true
		w.out = failedSink{err}
	case sink != nil:
		// Echo must not answer on a connection it no longer has, and its
		// pooled context must not keep net/http's response (and through it
		// the connection's buffers) alive.
		c.Response().Committed = true
		c.Response().Writer = nil
		w.out = sink
	default:
		c.Response().WriteHeader(http.StatusOK)
		// The sink writes to net/http's own ResponseWriter: Echo's
		// Response.Flush swallows errors, and a flush that hit the write
		// deadline must say so.
		w.out = newResponseSink(c.Response().Writer)
	}
	if q.resume {
		// Repeat the resume point: a parser that starts each connection
		// with an empty ID would otherwise forget it at the first blank
		// line, and resume from nothing next time.
		hint, _ := (&event.Message{Retry: s.cfg.Retry, ID: q.lastID.String()}).Bytes()
		w.write(hint)
	} else {
		w.write(s.retryHint)
	}
	_ = w.flush()
	s.answer(c, answerStream)
	s.metrics.opened.Inc()
	s.metrics.connections.Inc()
	s.log.Debug("stream opened", "job", job, "remote", c.RealIP(), "resume", q.resume, "last_event_id", lastIDAttr(q), "taken_over", sink != nil)
	return w, sink
}

func (s *Server) closed(o *openStream, w *writer, reason string) {
	s.metrics.connections.Dec()
	s.metrics.closed.WithLabelValues(reason).Inc()
	if w.err != nil {
		s.log.Debug("stream closed", "job", o.job, "remote", o.remote, "reason", reason, "events", w.sent, "err", w.err)
		return
	}
	s.log.Debug("stream closed", "job", o.job, "remote", o.remote, "reason", reason, "events", w.sent)
}

func lastIDAttr(q streamQuery) string {
	if !q.resume {
		return ""
	}
	return q.lastID.String()
}

func setStreamHeaders(c echo.Context) {
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	if c.Request().ProtoMajor == 1 {
		h.Set("Connection", "keep-alive")
	}
}

// admit reserves a slot under MaxConnections.
func (s *Server) admit() bool {
	n := s.active.Add(1)
	if s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		return false
	}
	return true
}

// refuse turns a stream away for a transient reason. An EventSource gives up
// for good on any non-200 answer, so a client that accepts
// text/event-stream gets a 200 stream carrying only a jittered retry hint
// and a comment naming the reason, and comes back later (perhaps to another
// instance). Other clients get 503 JSON with Retry-After.
func (s *Server) refuse(c echo.Context, reason string) error {
	s.metrics.refusals.WithLabelValues(reason).Inc()
	r := refusals[reason]
	retry := jitter(s.cfg.Retry)
	s.answer(c, answerRefused)
	if acceptsEventStream(c.Request()) {
		setStreamHeaders(c)
		c.Response().WriteHeader(http.StatusOK)
		m := event.Message{Retry: retry, Comment: reason + ": " + r.msg}
		if id, err := protocol.ParseID(c.Request().Header.Get("Last-Event-ID")); err == nil {
			m.ID = id.String() // keep the client's resume point (see open)
		}
		if b, err := m.Bytes(); err == nil {
			_, _ = c.Response().Write(b)
			c.Response().Flush()
		}
		return nil
	}
	c.Response().Header().Set("Retry-After", retryAfterSeconds(retry))
	return &apiError{Status: http.StatusServiceUnavailable, Message: r.msg, Code: r.code}
}

// redisFailed counts a failed Redis read and refuses the stream as transient.
func (s *Server) redisFailed(c echo.Context, op string, err error) error {
	if c.Request().Context().Err() != nil {
		return nil // the client left; the read was cancelled with it
	}
	s.metrics.redisErrors.WithLabelValues(op).Inc()
	s.log.Warn("redis read failed", "op", op, "err", err)
	return s.refuse(c, refuseRedis)
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(strings.ToLower(v), "text/event-stream") {
			return true
		}
	}
	return false
}

// failedSink is the sink of a connection lost before the stream began.
type failedSink struct{ err error }

func (f failedSink) Write([]byte) (int, error)        { return 0, f.err }
func (f failedSink) Flush() error                     { return f.err }
func (f failedSink) SetWriteDeadline(time.Time) error { return nil }

// responseSink adapts an Echo response to the writer's sink.
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
