package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/token"
)

// Config configures a gateway Server. The zero value of every field means its
// default, written in the field's comment; New fills the defaults and
// Validate names the first bad field.
type Config struct {
	// Addr is the listen address of Run. Default ":8080".
	Addr string
	// TLSCertFile and TLSKeyFile are PEM files of a certificate chain and
	// its private key: both, or neither. With them Serve serves HTTPS, with
	// HTTP/2 or HTTP/1.1 by ALPN, and loads the pair again when the files
	// change or ReloadCertificate is called (see tlscert.go). Without them
	// it serves HTTP/1.1 and cleartext HTTP/2 (h2c), for a TLS-terminating
	// proxy in front. Default: neither.
	TLSCertFile string
	TLSKeyFile  string
	// KeyPrefix is the Redis key prefix; publishers must use the same one.
	// Default "ssegate".
	KeyPrefix string

	// Heartbeat is how long a stream may go without a write before a
	// heartbeat event is sent (a stream busy with events needs none).
	// Default 30s.
	Heartbeat time.Duration
	// DefaultTimeout is how long a stream stays open when the client names
	// no timeout; the client then reconnects with Last-Event-ID. Default 5m.
	DefaultTimeout time.Duration
	// MaxTimeout caps the timeout a client may ask for. Default 10m.
	MaxTimeout time.Duration
	// Retry is the reconnection delay hint (the SSE retry: field) sent first
	// on every stream. Refusals and shutdown send it jittered. Default 2s.
	Retry time.Duration

	// MaxConnections limits open streams on this instance; beyond it new
	// streams are refused as transient. Default 10000; negative: unlimited.
	MaxConnections int
	// MaxConnectionsPerJob limits open streams of one job on this instance.
	// Default 1000; negative: unlimited.
	MaxConnectionsPerJob int
	// ClientBuffer is how many events may wait for one client. A client
	// that falls further behind is disconnected and resumes from the
	// stream. Default 64.
	ClientBuffer int
	// WriteTimeout bounds one write to a client; a client that does not
	// read for this long is disconnected. Default 10s.
	WriteTimeout time.Duration
	// SendBuffer sets the kernel send buffer (SO_SNDBUF) of every accepted
	// connection, in bytes; Linux doubles it. A small one caps kernel
	// memory per stream and makes a client that stopped reading visible
	// while its resume point is still in the job's history: an autotuned
	// buffer hides megabytes, thousands of events. Default 16 KiB (plenty
	// for SSE rates: 160 KB/s per stream at a 100 ms round trip); negative:
	// the OS default, autotuned.
	SendBuffer int
	// NoTakeOver keeps HTTP/1.x streams on net/http's response writer
	// instead of taking their connections over (see conn.go), at some
	// 40 KiB more per open stream. HTTP/2 streams always stay with net/http.
	NoTakeOver bool
	// ReportMaxBytes is the largest report sent in a complete event; a larger
	// one is announced with includeReport:false and reportTooLarge, with
	// the URL that serves it. Default 64 KiB: tmaxmax/go-sse and r3labs/sse
	// read at most 64 KiB per line and retry a longer complete for ever.
	ReportMaxBytes int

	// Auth, when set, requires an access token (see package token) on the
	// stream, snapshot and report routes, whose jobs claim covers the job;
	// a stream ends at its token's exp, told to come back. Default nil:
	// anyone may read any job.
	Auth *token.Verifier
	// PublishAuth, when set, serves POST /api/reports/:jobId/events to
	// tokens whose publish claim covers the job. Default nil: no HTTP
	// publishing.
	PublishAuth *token.Verifier
	// AuthCookie names a cookie that may carry the token, after the
	// Authorization header and the access_token query parameter. Default
	// "": none.
	AuthCookie string
	// PublishMaxBytes bounds the body of a publish request. Default 1 MiB
	// and 16 KiB: a report of the publisher's 1 MiB limit and its event.
	PublishMaxBytes int
	// IdempotencyWindow is how long a publish made with an Idempotency-Key
	// is remembered. Default 1h.
	IdempotencyWindow time.Duration

	// TrustedProxies are the proxies whose X-Forwarded-For is believed:
	// the client's address is the last one in it that is not a trusted
	// proxy. Default none: the connection's peer is the client.
	TrustedProxies []netip.Prefix
	// MaxConnectionsPerIP limits open streams from one client address on
	// this instance; beyond it new streams are refused (429). Default 0:
	// no limit, since behind a proxy missing from TrustedProxies every
	// client has the proxy's address.
	MaxConnectionsPerIP int

	// CORSOrigins are the origins allowed to read streams and snapshots
	// from a browser. Default ["*"] (any origin, without credentials).
	CORSOrigins []string

	// ShutdownGrace is the time over which open streams are closed in waves
	// when the server shuts down, each told a jittered retry, so clients
	// move to other instances without a reconnect storm. Default 5s.
	ShutdownGrace time.Duration
	// ShutdownTimeout bounds the whole shutdown, grace included.
	// Default ShutdownGrace + 5s.
	ShutdownTimeout time.Duration

	// PubSubConns is the number of Redis pub/sub connections that the
	// subscriptions of all jobs share. Default 4.
	PubSubConns int
	// Linger is how long a job's subscription is kept after its last
	// client on this instance leaves, so that a client that reconnects at
	// once costs Redis no UNSUBSCRIBE and SUBSCRIBE. Default 1s; negative:
	// none.
	Linger time.Duration
	// JoinTimeout bounds how long a new stream waits for its job's
	// subscription; after it the stream is refused as transient. Default 5s.
	JoinTimeout time.Duration
	// CanaryInterval is how often each pub/sub connection is proven to
	// deliver by a message sent to itself through Redis; a connection that
	// misses three in a row is reconnected and fails readiness. Default 2s.
	CanaryInterval time.Duration
	// RedisTimeout bounds each Redis call: a request's reads, the pub/sub
	// commands and the background health check. Default 3s.
	RedisTimeout time.Duration
	// MemoryRelease is how often the gateway checks for free heap that a
	// burst of connects left behind, and returns it to the OS when there
	// is much more of it than live heap (see memrelease.go). Default 10s;
	// negative: never.
	MemoryRelease time.Duration

	// NoAccessLog turns off the access log: one info line per request
	// (method, path without the query, status, duration, bytes, remote
	// address). Default false: on.
	NoAccessLog bool

	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
	// Registry receives the gateway's metrics and is served on /metrics.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
}

// Defaults.
const (
	DefaultAddr                 = ":8080"
	DefaultHeartbeat            = 30 * time.Second
	DefaultStreamTimeout        = 5 * time.Minute
	DefaultMaxStreamTimeout     = 10 * time.Minute
	DefaultRetry                = 2 * time.Second
	DefaultMaxConnections       = 10000
	DefaultMaxConnectionsPerJob = 1000
	DefaultClientBuffer         = 64
	DefaultWriteTimeout         = 10 * time.Second
	DefaultSendBuffer           = 16 << 10
	DefaultReportMaxBytes       = 60 << 10 // with the event around it, under 64 KiB
	DefaultShutdownGrace        = 5 * time.Second
	DefaultPubSubConns          = 4
	DefaultLinger               = time.Second
	DefaultJoinTimeout          = 5 * time.Second
	DefaultCanaryInterval       = 2 * time.Second
	DefaultRedisTimeout         = 3 * time.Second
	DefaultMemoryRelease        = 10 * time.Second
	DefaultPublishMaxBytes      = 1<<20 + 16<<10
	DefaultIdempotencyWindow    = time.Hour
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	setDefault(&c.Addr, DefaultAddr)
	setDefault(&c.KeyPrefix, protocol.DefaultPrefix)
	setDefault(&c.Heartbeat, DefaultHeartbeat)
	setDefault(&c.DefaultTimeout, DefaultStreamTimeout)
	setDefault(&c.MaxTimeout, DefaultMaxStreamTimeout)
	setDefault(&c.Retry, DefaultRetry)
	setDefault(&c.MaxConnections, DefaultMaxConnections)
	setDefault(&c.MaxConnectionsPerJob, DefaultMaxConnectionsPerJob)
	setDefault(&c.ClientBuffer, DefaultClientBuffer)
	setDefault(&c.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.SendBuffer, DefaultSendBuffer)
	setDefault(&c.ReportMaxBytes, DefaultReportMaxBytes)
	setDefault(&c.ShutdownGrace, DefaultShutdownGrace)
	if c.ShutdownTimeout == 0 && c.ShutdownGrace <= 10*time.Minute {
		c.ShutdownTimeout = c.ShutdownGrace + 5*time.Second
	}
	setDefault(&c.PubSubConns, DefaultPubSubConns)
	setDefault(&c.Linger, DefaultLinger)
	setDefault(&c.JoinTimeout, DefaultJoinTimeout)
	setDefault(&c.CanaryInterval, DefaultCanaryInterval)
	setDefault(&c.RedisTimeout, DefaultRedisTimeout)
	setDefault(&c.MemoryRelease, DefaultMemoryRelease)
	setDefault(&c.PublishMaxBytes, DefaultPublishMaxBytes)
	setDefault(&c.IdempotencyWindow, DefaultIdempotencyWindow)
	if c.CORSOrigins == nil {
		c.CORSOrigins = []string{"*"}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Validate reports the first field that cannot work, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"Heartbeat", c.Heartbeat}, {"DefaultTimeout", c.DefaultTimeout}, {"MaxTimeout", c.MaxTimeout},
		{"Retry", c.Retry}, {"WriteTimeout", c.WriteTimeout}, {"ShutdownGrace", c.ShutdownGrace},
		{"ShutdownTimeout", c.ShutdownTimeout}, {"JoinTimeout", c.JoinTimeout},
		{"CanaryInterval", c.CanaryInterval}, {"RedisTimeout", c.RedisTimeout},
		{"IdempotencyWindow", c.IdempotencyWindow},
	}
	for _, p := range positive {
		if p.d < 0 {
			return fmt.Errorf("gateway: config %s must not be negative, got %v", p.name, p.d)
		}
	}
	switch {
	case c.DefaultTimeout > c.MaxTimeout:
		return fmt.Errorf("gateway: config DefaultTimeout (%v) exceeds MaxTimeout (%v)", c.DefaultTimeout, c.MaxTimeout)
	case c.ShutdownGrace > 10*time.Minute:
		return fmt.Errorf("gateway: config ShutdownGrace must be at most 10m, got %v", c.ShutdownGrace)
	case c.ShutdownTimeout < c.ShutdownGrace:
		return fmt.Errorf("gateway: config ShutdownTimeout (%v) is shorter than ShutdownGrace (%v)", c.ShutdownTimeout, c.ShutdownGrace)
	case c.ClientBuffer < 1:
		return fmt.Errorf("gateway: config ClientBuffer must be at least 1, got %d", c.ClientBuffer)
	case c.PublishMaxBytes < 0:
		return fmt.Errorf("gateway: config PublishMaxBytes must not be negative, got %d", c.PublishMaxBytes)
	case c.ReportMaxBytes < 0:
		return fmt.Errorf("gateway: config ReportMaxBytes must not be negative, got %d", c.ReportMaxBytes)
	case c.PubSubConns < 1 || c.PubSubConns > 256:
		return fmt.Errorf("gateway: config PubSubConns must be 1-256, got %d", c.PubSubConns)
	case c.Retry < time.Millisecond:
		return fmt.Errorf("gateway: config Retry must be at least 1ms, got %v", c.Retry)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("gateway: config TLSCertFile and TLSKeyFile go together: set both or neither")
	case len(c.CORSOrigins) == 0:
		return errors.New("gateway: config CORSOrigins must name at least one origin (\"*\" for any)")
	}
	for _, o := range c.CORSOrigins {
		if o == "" {
			return errors.New("gateway: config CORSOrigins has an empty origin")
		}
	}
	return nil
}
