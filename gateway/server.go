package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// Server is one gateway instance: the HTTP API and the Hub behind it.
type Server struct {
	cfg       Config
	rdb       redis.UniversalClient
	store     *store
	enc       *encoder
	hub       *Hub
	metrics   *metrics
	registry  *prometheus.Registry
	log       *slog.Logger
	echo      *echo.Echo
	retryHint []byte

	active  atomic.Int64 // admitted streams, for MaxConnections
	serving atomic.Bool
	streams sync.WaitGroup         // streams taken over from net/http, until their end ran
	connsMu sync.Mutex             // guards conns
	conns   map[*connSink]struct{} // of those streams, to close at a forced shutdown
	watcher *closeWatcher          // notices closed taken-over connections; nil: readers do
	readers sync.WaitGroup         // reader goroutines watching connections without the watcher
}

// New builds a Server that reads jobs through rdb (a single, Sentinel or
// Cluster client). It starts nothing: Run or Serve does.
func New(cfg Config, rdb redis.UniversalClient) (*Server, error) {
	if rdb == nil {
		return nil, errors.New("gateway: nil Redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	reg := cfg.Registry
	if reg == nil {
		reg = newRegistry()
	}
	st := &store{rdb: rdb, keys: protocol.NewKeys(cfg.KeyPrefix), timeout: cfg.RedisTimeout}
	enc := &encoder{store: st, maxReport: cfg.ReportMaxBytes}
	m := newMetrics(reg)
	s := &Server{
		cfg: cfg, rdb: rdb, store: st, enc: enc, metrics: m, registry: reg, log: cfg.Logger,
		hub: newHub(rdb, cfg, st, enc, m, instanceID()),
	}
	hint, err := (&event.Message{Retry: cfg.Retry}).Bytes()
	if err != nil {
		return nil, err
	}
	s.retryHint = hint
	s.echo = s.routes()
	return s, nil
}

func instanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) { _ = writeError(c, err) }
	e.Use(s.recoverPanics)
	e.Use(limitHeaders)
	e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins:  s.cfg.CORSOrigins,
		AllowMethods:  []string{http.MethodGet, http.MethodHead, http.MethodOptions},
		AllowHeaders:  []string{"Last-Event-ID", "Cache-Control", "Accept"},
		ExposeHeaders: []string{"Retry-After"},
		MaxAge:        600,
	}))
	e.GET("/api/reports/:jobId/stream", s.handleStream)
	e.GET("/api/reports/:jobId", s.handleSnapshot)
	e.GET("/healthz", s.handleHealth)
	e.GET("/readyz", s.handleReady)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})))
	return e
}

// Handler returns the HTTP handler of the API. Streams need the hub, which
// runs only inside Run or Serve; without it they are refused as transient.
func (s *Server) Handler() http.Handler { return s.echo }

// Handle adds a route outside the API (a demo page, say). Call it before
// Run or Serve.
func (s *Server) Handle(method, path string, h http.Handler) {
	s.echo.Add(method, path, echo.WrapHandler(h))
}

// Registry returns the registry the gateway's metrics are on.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Run listens on Config.Addr and serves until ctx ends, then shuts down:
// see Serve.
func (s *Server) Run(ctx context.Context) error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	return s.Serve(ctx, l)
}

// Serve serves on l until ctx ends. Then it drains: /readyz fails, new
// streams are refused as transient, open streams are closed in waves over
// ShutdownGrace with a jittered retry hint, and it returns within
// ShutdownTimeout. A Server serves once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		_ = l.Close()
		return errors.New("gateway: Serve called twice")
	}
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	s.hub.ctx = hubCtx // before any request can read it
	if w, err := newCloseWatcher(); err == nil {
		s.watcher = w
		defer w.close()
	} else {
		s.log.Debug("no close watcher; streams use reader goroutines", "err", err)
	}
	defer s.readers.Wait()
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		s.hub.run(hubCtx)
	}()
	defer func() {
		stopHub()
		<-hubDone
	}()

	hs := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20, // a backstop; limitHeaders answers in JSON below it
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	// HTTP/1.1, and HTTP/2 without TLS for clients that know to use it (a
	// TLS-terminating load balancer in front, say). Behind TLS of its own,
	// wrap the listener with crypto/tls; HTTP/2 then needs ALPN there.
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	if s.cfg.SendBuffer > 0 {
		l = sendBufferListener{l, s.cfg.SendBuffer}
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	s.log.Info("gateway serving", "addr", l.Addr().String())

	select {
	case err := <-errc:
		stopHub() // ends every stream still open
		<-hubDone
		s.streams.Wait()
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	start := time.Now()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.log.Info("draining", "streams", len(s.hub.clients()), "grace", s.cfg.ShutdownGrace)
	s.hub.drain(shutdownCtx, s.cfg.ShutdownGrace)
	if err := hs.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("shutdown timed out; closing the remaining connections", "err", err)
		_ = hs.Close()
	}
	<-errc
	// Streams taken over from net/http are not Shutdown's to wait for.
	streamsDone := make(chan struct{})
	go func() { s.streams.Wait(); close(streamsDone) }()
	select {
	case <-streamsDone:
	case <-shutdownCtx.Done():
		s.log.Warn("shutdown timed out; closing the remaining streams")
		s.connsMu.Lock()
		for sink := range s.conns {
			_ = sink.conn.Close()
		}
		s.connsMu.Unlock()
		stopHub()
		<-streamsDone
	}
	s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// track adds or removes a taken-over stream's sink.
func (s *Server) track(sink *connSink, open bool) {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if open {
		if s.conns == nil {
			s.conns = map[*connSink]struct{}{}
		}
		s.conns[sink] = struct{}{}
	} else {
		delete(s.conns, sink)
	}
}

// sendBufferListener sets SO_SNDBUF on each accepted TCP connection.
type sendBufferListener struct {
	net.Listener
	size int
}

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// snapshotResponse is the JSON of GET /api/reports/:jobId.
type snapshotResponse struct {
	JobID       string          `json:"jobId"`
	Status      event.Status    `json:"status"`
	Progress    json.RawMessage `json:"progress"`
	ReportID    *string         `json:"reportId"`
	Error       json.RawMessage `json:"error"`
	UpdatedAt   event.Timestamp `json:"updatedAt"`
	LastEventID string          `json:"lastEventId"`
	Report      json.RawMessage `json:"report,omitempty"`
}

// handleSnapshot serves GET /api/reports/:jobId: where a job stands, for
// clients that poll.
func (s *Server) handleSnapshot(c echo.Context) error {
	job := c.Param("jobId")
	if !protocol.ValidJobID(job) {
		return badRequest(CodeInvalidJobID, protocol.ErrInvalidJobID.Error())
	}
	includeReport := false
	if vs, ok := c.QueryParams()["includeReport"]; ok {
		b, err := parseBool(vs[0])
		if err != nil || len(vs) > 1 {
			return badRequest(CodeInvalidIncludeReport, "includeReport must be true or false")
		}
		includeReport = b
	}
	ctx := c.Request().Context()
	st, err := s.store.state(ctx, job)
	if err != nil {
		return s.snapshotFailed(c, err)
	}
	if st == nil {
		return &apiError{Status: http.StatusNotFound, Message: "no such job", Code: CodeJobNotFound}
	}
	resp := snapshotResponse{
		JobID: job, Status: st.status, UpdatedAt: event.At(st.updatedAt), LastEventID: st.lastID.String(),
		Progress: rawOrNull(st.progress), Error: json.RawMessage("null"),
	}
	switch st.status {
	case event.StatusFailed:
		resp.Error = rawOrNull(st.result)
	case event.StatusCompleted:
		var rec event.CompleteRecord
		if err := json.Unmarshal([]byte(st.result), &rec); err == nil {
			resp.ReportID = &rec.ReportID
			if includeReport && rec.HasReport {
				report, _, err := s.store.report(ctx, job, s.cfg.ReportMaxBytes)
				if err != nil {
					return s.snapshotFailed(c, err)
				}
				resp.Report = report
			}
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, resp)
}

func (s *Server) snapshotFailed(c echo.Context, err error) error {
	s.metrics.redisErrors.WithLabelValues("snapshot").Inc()
	s.log.Warn("redis read failed", "op", "snapshot", "err", err)
	c.Response().Header().Set("Retry-After", retryAfterSeconds(jitter(s.cfg.Retry)))
	r := refusals[refuseRedis]
	return &apiError{Status: http.StatusServiceUnavailable, Message: r.msg, Code: r.code}
}

func rawOrNull(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

// handleHealth serves GET /healthz: the process is alive.
func (s *Server) handleHealth(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady serves GET /readyz: Redis answers, every pub/sub connection
// has delivered its canary lately, and the instance is not draining.
func (s *Server) handleReady(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	if s.hub.draining.Load() {
		return &apiError{Status: http.StatusServiceUnavailable, Message: "draining", Code: CodeDraining}
	}
	if err := s.store.ping(c.Request().Context()); err != nil {
		return &apiError{Status: http.StatusServiceUnavailable, Message: "redis: " + err.Error(), Code: CodeRedisUnavailable}
	}
	if err := s.hub.healthy(); err != nil {
		return &apiError{Status: http.StatusServiceUnavailable, Message: err.Error(), Code: CodeNotReady}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// maxHeaderBytes bounds the request line and headers. Beyond it a request
// gets 431 with the JSON error (net/http's own limit, higher, answers in
// plain text).
const maxHeaderBytes = 32 << 10

// limitHeaders refuses requests whose URL and headers exceed maxHeaderBytes.
func limitHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		n := len(r.RequestURI)
		for k, vs := range r.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
		if n > maxHeaderBytes {
			return &apiError{Status: http.StatusRequestHeaderFieldsTooLarge, Message: "request headers too large", Code: CodeHeadersTooLarge}
		}
		return next(c)
	}
}

// recoverPanics turns a handler panic into a JSON 500 and a metric.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.metrics.panics.Inc()
			s.log.Error("handler panic", "panic", fmt.Sprint(r), "method", c.Request().Method, "path", c.Path(), "stack", string(debug.Stack()))
			err = &apiError{Status: http.StatusInternalServerError, Message: "internal error", Code: CodeInternal}
		}()
		return next(c)
	}
}
