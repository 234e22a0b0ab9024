package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
)

// Server is one gateway instance: the HTTP API and the Hub behind it.
//
// Concurrency: its methods are safe for concurrent use, except Use and
// Handle, which are for setting it up before Run or Serve. Serve owns every
// goroutine the Server starts.
type Server struct {
	cfg       Config
	store     *store
	lookUps   singleflight.Group   // state reads before admission, one per job at a time
	publisher *publisher.Publisher // for POST .../events
	enc       *encoder
	hub       *Hub
	metrics   *metrics
	registry  *prometheus.Registry
	log       *slog.Logger
	echo      *echo.Echo   // the JSON API and routes added with Handle
	handler   http.Handler // everything, the stream route and Use's middleware included
	retryHint []byte

	active   atomic.Int64           // admitted streams, for MaxConnections
	ips      ipCounts               // admitted streams by client address, for MaxConnectionsPerIP
	refused  refusalRate            // limit refusals of about the last second (see refusedBackoff)
	serving  atomic.Bool            //
	streams  sync.WaitGroup         // admitted streams, until their end ran
	connsMu  sync.Mutex             // guards conns
	conns    map[*connSink]struct{} // streams taken over from net/http, to close at a forced shutdown
	watcher  *closeWatcher          // notices closed taken-over connections; nil: readers do
	readers  sync.WaitGroup         // reader goroutines watching connections without the watcher
	certs    *certReloader          // the TLS certificate; nil: no TLS
	beats    beatClock              // every stream's heartbeat and timeout
	finished finishedReads          // finished jobs' history reads, shared by their resumes

	// hookTakenOver, when set (by tests), runs right after a stream's
	// connection is taken over from net/http.
	hookTakenOver func()
	// readHeaderTimeout, when set (by tests), replaces Serve's 10s bound
	// on reading a request's headers.
	readHeaderTimeout time.Duration
	// certPoll, when set (by tests), replaces certPollInterval.
	certPoll time.Duration
}

// New builds a Server that reads jobs through rdb (a single, Sentinel or
// Cluster client). It starts nothing: Run or Serve does.
//
// Every call on rdb is bounded by the request's context and RedisTimeout,
// but go-redis honours a context's deadline only with
// Options.ContextTimeoutEnabled; set it, and the client's dial, read and
// write timeouts, so that a Redis that hangs cannot hold a request longer
// (cmd/gateway does). New adds a dial hook to rdb that only its own pub/sub
// connections use (see oneDialHook).
func New(cfg Config, rdb redis.UniversalClient) (*Server, error) {
	if rdb == nil {
		return nil, errors.New("gateway: nil Redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var certs *certReloader
	if cfg.TLSCertFile != "" {
		var err error
		if certs, err = newCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Logger); err != nil {
			return nil, err
		}
	}
	reg := cfg.Registry
	if reg == nil {
		reg = newRegistry()
	}
	keys := protocol.NewKeys(cfg.KeyPrefix)
	st := &store{rdb: rdb, keys: keys, timeout: cfg.RedisTimeout}
	m := newMetrics(reg)
	enc := &encoder{store: st, maxReport: cfg.ReportMaxBytes, metrics: m}
	hub := newHub(cfg, st, enc, m)
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		hub.broker = newClusterBroker(cc, cfg, keys, hub.events(), m, instanceID())
	} else {
		hub.broker = newRedisBroker(rdb, cfg, keys, hub.events(), m, instanceID())
	}
	s := &Server{cfg: cfg, store: st, enc: enc, hub: hub, metrics: m, registry: reg, log: cfg.Logger, certs: certs}
	s.publisher = publisher.New(rdb, publisher.WithKeyPrefix(cfg.KeyPrefix), publisher.WithIdempotencyWindow(cfg.IdempotencyWindow))
	hint, err := lines(event.Message{Retry: cfg.Retry})
	if err != nil {
		return nil, err
	}
	s.retryHint = hint
	s.echo = s.api()
	s.handler = s.routes()
	return s, nil
}

func instanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// routes is the whole HTTP handler: the stream route served by the Server
// itself, with net/http's ResponseWriter (it may take the connection over),
// and everything else by Echo; both behind the same middleware, so a
// request logger or an auth check sees every request alike.
func (s *Server) routes() http.Handler {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if job, ok := streamRoute(r); ok {
			s.serveStream(w, r, job)
			return
		}
		s.echo.ServeHTTP(w, r)
	})
	h = s.cors(h)
	h = limitHeaders(h)
	h = s.checkFraming(h) // see smuggling.go
	h = s.recoverPanics(h)
	return s.accessLog(h)
}

// streamPrefix and streamSuffix frame the stream route,
// GET /api/reports/{jobId}/stream.
const (
	streamPrefix = "/api/reports/"
	streamSuffix = "/stream"
)

// streamRoute reports whether r is for the stream route and which job it
// names (not yet validated). Other methods on the same path go to Echo,
// which answers 405.
func streamRoute(r *http.Request) (job string, ok bool) {
	if r.Method != http.MethodGet {
		return "", false
	}
	p := r.URL.Path
	if len(p) <= len(streamPrefix)+len(streamSuffix) || p[:len(streamPrefix)] != streamPrefix || p[len(p)-len(streamSuffix):] != streamSuffix {
		return "", false
	}
	job = p[len(streamPrefix) : len(p)-len(streamSuffix)]
	for i := range len(job) {
		if job[i] == '/' {
			return "", false
		}
	}
	return job, true
}

// Handler returns the HTTP handler of the API. Streams need the hub, which
// runs only inside Run or Serve; without it they are refused as transient.
func (s *Server) Handler() http.Handler { return s.handler }

// Use wraps the whole API, the stream route included, in net/http
// middleware (a request logger, an auth check); the last one given is the
// outermost. Middleware that wraps the ResponseWriter should give it an
// Unwrap method (see http.ResponseController), else streams stay with
// net/http instead of being taken over, at some 40 KiB more each. Call it
// before Run or Serve.
func (s *Server) Use(mw ...func(http.Handler) http.Handler) {
	for _, m := range mw {
		s.handler = m(s.handler)
	}
}

// Handle adds a route outside the API (a demo page, say). Call it before
// Run or Serve.
func (s *Server) Handle(method, path string, h http.Handler) {
	s.echo.Add(method, path, echo.WrapHandler(h))
}

// A Route is one method and path the Server answers, in Echo's syntax
// (":jobId" for a path parameter).
type Route struct{ Method, Path string }

// Routes lists the routes of the API, the stream route and routes added
// with Handle included, sorted: what docs/openapi.yaml must describe.
func (s *Server) Routes() []Route {
	var rs []Route
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		rs = append(rs, Route{Method: r.Method, Path: r.Path})
	}
	slices.SortFunc(rs, func(a, b Route) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), strings.Compare(a.Method, b.Method))
	})
	return slices.Compact(rs)
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
// ShutdownTimeout, once every admitted stream has ended. A Server serves
// once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		_ = l.Close()
		return errors.New("gateway: Serve called twice")
	}
	// Deferred in this order: the watcher is closed (and has handed its
	// connections to readers, if it failed) before the readers are waited
	// for.
	defer s.readers.Wait()
	if w, err := newCloseWatcher(s.watcherFailed); err == nil {
		s.watcher = w
		defer w.close()
	} else {
		s.log.Debug("no close watcher; streams use reader goroutines", "err", err)
	}
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		s.hub.run(hubCtx)
	}()
	relDone := make(chan struct{})
	go func() {
		defer close(relDone)
		if s.cfg.MemoryRelease > 0 {
			newMemReleaser(s.cfg.MemoryRelease, s.metrics).run(hubCtx)
		}
	}()
	defer func() {
		stopHub()
		<-hubDone
		<-relDone
	}()

	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: cmp.Or(s.readHeaderTimeout, 10*time.Second), // slow headers (slowloris) are cut
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20, // a backstop; limitHeaders answers in JSON below it
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
		ConnContext:       connContext, // the scanned connection's framing, for checkFraming
	}
	// Without TLS: HTTP/1.1, and HTTP/2 for clients that know to use it (a
	// TLS-terminating load balancer in front, say). With TLS: HTTP/2 or
	// HTTP/1.1, as the client chooses by ALPN.
	hs.Protocols.SetHTTP1(true)
	if s.certs != nil {
		hs.Protocols.SetHTTP2(true)
	} else {
		hs.Protocols.SetUnencryptedHTTP2(true)
	}
	if s.cfg.SendBuffer > 0 {
		l = sendBufferListener{l, s.cfg.SendBuffer}
	}
	// Every TCP connection's HTTP/1 requests are scanned for Content-Length
	// with Transfer-Encoding (request smuggling; see smuggling.go): with
	// TLS, once decrypted (see tlsListener).
	if s.certs != nil {
		l = newTLSListener(l, s.certs.tlsConfig(), hs.ReadHeaderTimeout, s.log) // hs.Serve closes it
		defer s.certs.watch(cmp.Or(s.certPoll, certPollInterval))()
	} else {
		l = scanListener{l}
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	s.log.Info("gateway serving", "addr", l.Addr().String(), "tls", s.certs != nil)

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
	s.log.Info("draining", "streams", s.active.Load(), "grace", s.cfg.ShutdownGrace)
	s.hub.drain(shutdownCtx, s.cfg.ShutdownGrace)
	if err := hs.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("shutdown timed out; closing the remaining connections", "err", err)
		_ = hs.Close()
	}
	<-errc
	// Taken-over streams are not Shutdown's to wait for; every admitted
	// stream is counted in s.streams from admission to its end.
	streamsDone := make(chan struct{})
	go func() { s.streams.Wait(); close(streamsDone) }()
	select {
	case <-streamsDone:
	case <-shutdownCtx.Done():
		s.log.Warn("shutdown timed out; closing the remaining streams")
		s.connsMu.Lock()
		for sink := range s.conns {
			_ = closeNow(sink.conn)
		}
		s.connsMu.Unlock()
		stopHub()
		<-streamsDone
	}
	s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// watcherFailed takes over the connections of a close watcher that failed:
// each gets a reader goroutine, as streams do where there is no watcher.
func (s *Server) watcherFailed(err error, orphans []orphan) {
	s.metrics.watcherFailures.Inc()
	s.log.Error("close watcher failed; watching connections with reader goroutines", "err", err, "connections", len(orphans))
	for _, o := range orphans {
		s.readPeer(o.conn, o.onClose)
	}
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
