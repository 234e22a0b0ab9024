// Command gateway runs an ssegate gateway: Server-Sent Events streams of job
// progress, fanned out from Redis.
//
// Every flag has an environment twin (see --help). With no Redis URL it
// starts an embedded in-memory Redis (miniredis) on --embedded-redis-addr, so
// `go run ./cmd/gateway` works alone; publish to it with
// `ssepub --redis-url redis://127.0.0.1:6380/0`.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/demo"
	"github.com/ssegate/ssegate/gateway"
	"github.com/ssegate/ssegate/pkg/redisurl"
	"github.com/ssegate/ssegate/pkg/token"
	"github.com/ssegate/ssegate/publisher"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the settings that are not gateway.Config fields.
type options struct {
	redisURL     string
	embeddedAddr string
	logLevel     string
	logFormat    string
	maxConns     int
	maxJobConns  int
	corsOrigins  string
	demo         demoMode
	demoScale    float64
	pprofAddr    string
	linger       time.Duration
	accessLog    onOff
	sendBuffer   int

	jwtSecret, jwtPublicKey             string
	publisherSecret, publisherPublicKey string
	jwtIssuer, jwtAudience              string
	trustedProxies                      string
	maxIPConns                          int
}

// envTwins maps each flag to its environment variable.
var envTwins = map[string]string{
	"addr":                     "SSEGATE_ADDR",
	"tls-cert":                 "SSEGATE_TLS_CERT",
	"tls-key":                  "SSEGATE_TLS_KEY",
	"redis-url":                "REDIS_URL",
	"embedded-redis-addr":      "SSEGATE_EMBEDDED_REDIS_ADDR",
	"key-prefix":               "SSEGATE_KEY_PREFIX",
	"heartbeat":                "SSEGATE_HEARTBEAT",
	"default-timeout":          "SSEGATE_DEFAULT_TIMEOUT",
	"max-timeout":              "SSEGATE_MAX_TIMEOUT",
	"retry":                    "SSEGATE_RETRY",
	"max-connections":          "SSEGATE_MAX_CONNECTIONS",
	"max-connections-per-job":  "SSEGATE_MAX_CONNECTIONS_PER_JOB",
	"client-buffer":            "SSEGATE_CLIENT_BUFFER",
	"write-timeout":            "SSEGATE_WRITE_TIMEOUT",
	"send-buffer":              "SSEGATE_SEND_BUFFER",
	"report-max-bytes":         "SSEGATE_REPORT_MAX_BYTES",
	"cors-origins":             "SSEGATE_CORS_ORIGINS",
	"shutdown-grace":           "SSEGATE_SHUTDOWN_GRACE",
	"shutdown-timeout":         "SSEGATE_SHUTDOWN_TIMEOUT",
	"pubsub-conns":             "SSEGATE_PUBSUB_CONNS",
	"join-timeout":             "SSEGATE_JOIN_TIMEOUT",
	"linger":                   "SSEGATE_LINGER",
	"canary-interval":          "SSEGATE_CANARY_INTERVAL",
	"redis-timeout":            "SSEGATE_REDIS_TIMEOUT",
	"memory-release-interval":  "SSEGATE_MEMORY_RELEASE_INTERVAL",
	"log-level":                "SSEGATE_LOG_LEVEL",
	"log-format":               "SSEGATE_LOG_FORMAT",
	"access-log":               "SSEGATE_ACCESS_LOG",
	"demo":                     "SSEGATE_DEMO",
	"demo-step-scale":          "SSEGATE_DEMO_STEP_SCALE",
	"pprof-addr":               "SSEGATE_PPROF_ADDR",
	"jwt-secret":               "SSEGATE_JWT_SECRET",
	"jwt-public-key":           "SSEGATE_JWT_PUBLIC_KEY",
	"publisher-jwt-secret":     "SSEGATE_PUBLISHER_JWT_SECRET",
	"publisher-jwt-public-key": "SSEGATE_PUBLISHER_JWT_PUBLIC_KEY",
	"jwt-issuer":               "SSEGATE_JWT_ISSUER",
	"jwt-audience":             "SSEGATE_JWT_AUDIENCE",
	"jwt-cookie":               "SSEGATE_JWT_COOKIE",
	"trusted-proxies":          "SSEGATE_TRUSTED_PROXIES",
	"max-connections-per-ip":   "SSEGATE_MAX_CONNECTIONS_PER_IP",
	"publish-max-bytes":        "SSEGATE_PUBLISH_MAX_BYTES",
	"idempotency-window":       "SSEGATE_IDEMPOTENCY_WINDOW",
}

// parseConfig reads flags over environment over defaults.
func parseConfig(args []string, getenv func(string) string, usageOut io.Writer) (gateway.Config, options, error) {
	var cfg gateway.Config
	var o options
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.StringVar(&cfg.Addr, "addr", gateway.DefaultAddr, "listen address; with the embedded Redis the default is "+embeddedAddr)
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate chain, with --tls-key: serve HTTPS, HTTP/2 and HTTP/1.1 (reloaded on SIGHUP and when the files change); empty: HTTP/1.1 and h2c, behind a TLS-terminating proxy")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.redisURL, "redis-url", "", "Redis URL (redis://, rediss://, unix://); empty: embedded in-memory Redis")
	fs.StringVar(&o.embeddedAddr, "embedded-redis-addr", "127.0.0.1:6380", "address of the embedded Redis when no Redis URL is set")
	fs.StringVar(&cfg.KeyPrefix, "key-prefix", "ssegate", "Redis key prefix (publishers must use the same)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", gateway.DefaultHeartbeat, "a heartbeat goes out after this long without any other write")
	fs.DurationVar(&cfg.DefaultTimeout, "default-timeout", gateway.DefaultStreamTimeout, "stream timeout when the client names none")
	fs.DurationVar(&cfg.MaxTimeout, "max-timeout", gateway.DefaultMaxStreamTimeout, "largest stream timeout a client may ask for")
	fs.DurationVar(&cfg.Retry, "retry", gateway.DefaultRetry, "reconnection hint sent as the SSE retry field")
	fs.IntVar(&o.maxConns, "max-connections", gateway.DefaultMaxConnections, "open streams per instance; 0: unlimited")
	fs.IntVar(&o.maxJobConns, "max-connections-per-job", gateway.DefaultMaxConnectionsPerJob, "open streams per job per instance; 0: unlimited")
	fs.IntVar(&cfg.ClientBuffer, "client-buffer", gateway.DefaultClientBuffer, "events queued per client before it is cut as slow")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", gateway.DefaultWriteTimeout, "longest write to a client before it is cut as slow")
	fs.IntVar(&o.sendBuffer, "send-buffer", gateway.DefaultSendBuffer, "SO_SNDBUF of client connections in bytes (small: a stalled client is cut while it can still resume exactly); 0: OS default (autotuned)")
	fs.IntVar(&cfg.ReportMaxBytes, "report-max-bytes", gateway.DefaultReportMaxBytes, "largest report sent in a complete event")
	fs.StringVar(&o.corsOrigins, "cors-origins", "*", "comma-separated allowed origins; * for any (without credentials)")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", gateway.DefaultShutdownGrace, "time over which streams are closed in waves on shutdown")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "bound of the whole shutdown (default: shutdown-grace + 5s)")
	fs.IntVar(&cfg.PubSubConns, "pubsub-conns", gateway.DefaultPubSubConns, "Redis pub/sub connections shared by all jobs")
	fs.DurationVar(&o.linger, "linger", gateway.DefaultLinger, "a job's subscription is kept this long after its last client leaves; 0: none")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", gateway.DefaultJoinTimeout, "how long a new stream waits for its job's subscription")
	fs.DurationVar(&cfg.CanaryInterval, "canary-interval", gateway.DefaultCanaryInterval, "interval of the pub/sub delivery canary")
	fs.DurationVar(&cfg.RedisTimeout, "redis-timeout", gateway.DefaultRedisTimeout, "bound of each Redis call: dial, read, write, pool wait and the request's context")
	fs.DurationVar(&cfg.MemoryRelease, "memory-release-interval", gateway.DefaultMemoryRelease, "how often to check for free heap a burst of connects left, returned to the OS when it is well over the live heap; negative: never")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "subscriber tokens: comma-separated HS256 secrets of 32+ bytes (two during a rotation); set it in the environment, not on the command line")
	fs.StringVar(&o.jwtPublicKey, "jwt-public-key", "", "subscriber tokens: PEM file of RS256 (RSA) and ES256 (P-256) public keys (several during a rotation)")
	fs.StringVar(&o.publisherSecret, "publisher-jwt-secret", "", "publisher tokens for POST /api/reports/{jobId}/events: HS256 secrets as --jwt-secret; unset with --publisher-jwt-public-key: no HTTP publishing")
	fs.StringVar(&o.publisherPublicKey, "publisher-jwt-public-key", "", "publisher tokens: PEM file of public keys as --jwt-public-key")
	fs.StringVar(&o.jwtIssuer, "jwt-issuer", "", "when set, tokens must carry this iss")
	fs.StringVar(&o.jwtAudience, "jwt-audience", "", "when set, tokens' aud must contain this")
	fs.StringVar(&cfg.AuthCookie, "jwt-cookie", "", "name of a cookie that may carry the token (after the Authorization header and the access_token parameter); empty: none")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs or addresses of proxies whose X-Forwarded-For names the client; empty: none")
	fs.IntVar(&o.maxIPConns, "max-connections-per-ip", 0, "open streams per client address per instance (429 beyond); 0: unlimited")
	fs.IntVar(&cfg.PublishMaxBytes, "publish-max-bytes", gateway.DefaultPublishMaxBytes, "largest body of a publish request")
	fs.DurationVar(&cfg.IdempotencyWindow, "idempotency-window", gateway.DefaultIdempotencyWindow, "how long a publish's Idempotency-Key is remembered")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); empty: off")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json (durations in milliseconds)")
	o.accessLog = "on"
	fs.Var(&o.accessLog, "access-log", "one info line per request (method, path without the query, status, duration, bytes, remote): on or off")
	o.demo = "auto"
	fs.Var(&o.demo, "demo", "demo page at / and simulated jobs: auto (on with the embedded Redis), on or off")
	fs.Float64Var(&o.demoScale, "demo-step-scale", 1, "multiplies the demo jobs' step durations (a job takes about 12s at 1)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: gateway [flags]\n       gateway healthcheck [flags]   (exit 0 if the gateway these flags start answers /healthz)\n\nEvery flag can also be set by its environment variable; flags win.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(fs.Output(), "  --%s (%s, default %q)\n      %s\n", f.Name, envTwins[f.Name], f.DefValue, f.Usage)
		})
	}

	if getenv("SSEGATE_REDIS_MODE") != "" {
		return cfg, o, errors.New("SSEGATE_REDIS_MODE is gone: the Redis URL's scheme says the deployment (redis+cluster://, redis+sentinel://)")
	}
	for name, env := range envTwins {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				return cfg, o, fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return cfg, o, err
	}
	// With the embedded Redis the demo, whose POST /demo/jobs anyone can
	// call, is on: unless told otherwise, listen on loopback only.
	addrSet := getenv(envTwins["addr"]) != ""
	fs.Visit(func(f *flag.Flag) { addrSet = addrSet || f.Name == "addr" })
	if o.redisURL == "" && !addrSet {
		cfg.Addr = embeddedAddr
	}
	cfg.NoAccessLog = o.accessLog == "off"
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return cfg, o, errors.New("--tls-cert and --tls-key (SSEGATE_TLS_CERT, SSEGATE_TLS_KEY) go together: set both, or neither")
	}
	switch {
	case o.sendBuffer < 0:
		return cfg, o, fmt.Errorf("--send-buffer must not be negative, got %d", o.sendBuffer)
	case o.sendBuffer == 0:
		cfg.SendBuffer = -1 // the flag's "0: OS default" is the Config's negative
	default:
		cfg.SendBuffer = o.sendBuffer
	}
	if fs.NArg() > 0 {
		return cfg, o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.MaxConnections = unlimitedIfZero(o.maxConns)
	cfg.MaxConnectionsPerJob = unlimitedIfZero(o.maxJobConns)
	switch {
	case o.linger < 0:
		return cfg, o, fmt.Errorf("--linger must not be negative, got %v", o.linger)
	case o.linger == 0:
		cfg.Linger = -1 // the flag's "0: none" is the Config's negative
	default:
		cfg.Linger = o.linger
	}
	for _, origin := range strings.Split(o.corsOrigins, ",") {
		if origin = strings.TrimSpace(origin); origin != "" {
			cfg.CORSOrigins = append(cfg.CORSOrigins, origin)
		}
	}
	if !(o.demoScale > 0) {
		return cfg, o, fmt.Errorf("--demo-step-scale must be positive, got %v", o.demoScale)
	}
	if cfg.CORSOrigins == nil {
		return cfg, o, errors.New("--cors-origins names no origin")
	}
	if err := authConfig(&cfg, o); err != nil {
		return cfg, o, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, o, err
	}
	return cfg, o, nil
}

// authConfig builds the token verifiers, the trusted proxies and the per-IP
// limit from the flags.
func authConfig(cfg *gateway.Config, o options) error {
	vo := token.VerifierOptions{Issuer: o.jwtIssuer, Audience: o.jwtAudience}
	var err error
	if cfg.Auth, err = verifier("--jwt-secret", o.jwtSecret, "--jwt-public-key", o.jwtPublicKey, vo); err != nil {
		return err
	}
	if cfg.PublishAuth, err = verifier("--publisher-jwt-secret", o.publisherSecret, "--publisher-jwt-public-key", o.publisherPublicKey, vo); err != nil {
		return err
	}
	for _, p := range strings.Split(o.trustedProxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return fmt.Errorf("--trusted-proxies: %q is neither a CIDR nor an address", p)
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, prefix.Masked())
	}
	if o.maxIPConns < 0 {
		return fmt.Errorf("--max-connections-per-ip must not be negative, got %d", o.maxIPConns)
	}
	cfg.MaxConnectionsPerIP = o.maxIPConns
	return nil
}

// verifier is the verifier of secrets and a PEM file of public keys, or nil
// when neither is set.
func verifier(secretFlag, secrets, keyFlag, keyFile string, vo token.VerifierOptions) (*token.Verifier, error) {
	var keys []token.Key
	if strings.TrimSpace(secrets) != "" {
		ks, err := token.Secrets(secrets)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", secretFlag, err)
		}
		keys = append(keys, ks...)
	}
	if keyFile != "" {
		pem, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyFlag, err)
		}
		ks, err := token.PublicKeys(pem)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", keyFlag, keyFile, err)
		}
		keys = append(keys, ks...)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return token.NewVerifier(keys, vo)
}

// unlimitedIfZero maps the flag's "0: unlimited" to the Config's negative.
func unlimitedIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func newLogger(level, format string, out io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		// slog writes a duration as integer nanoseconds; log readers
		// expect milliseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.Float64Value(float64(a.Value.Duration().Microseconds()) / 1000)
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", format)
}

// The Redis client's buffers per pooled connection (see
// redisurl.SetBufferSizes): a replay page of 100 events is about 30 KiB,
// read through them in a few reads.
const (
	redisBuffer         = 16 << 10
	redisPipelineBuffer = 32 << 10
)

// newRedis connects to the configured Redis, or starts the embedded one.
// Every call of the client is bounded by timeout (--redis-timeout): it
// dials, writes, reads and waits for a pooled connection for at most that
// long, each, and honours its context's deadline; a timeout set in the URL
// (dial_timeout=, read_timeout=, write_timeout=, pool_timeout=, and a
// sentinel URL's context_timeout_enabled=) wins. The returned stop closes
// the client (and the embedded server).
func newRedis(o options, timeout time.Duration, log *slog.Logger) (redis.UniversalClient, func(), error) {
	if o.redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr(o.embeddedAddr); err != nil {
			return nil, nil, fmt.Errorf("start embedded Redis on %s: %w", o.embeddedAddr,
				inUse(err, "--embedded-redis-addr", envTwins["embedded-redis-addr"]+", or REDIS_URL for a real Redis"))
		}
		log.Warn("no Redis URL set: using an embedded in-memory Redis (data is lost on exit; set REDIS_URL for a real one)",
			"addr", m.Addr(), "publish_with", "ssepub --redis-url redis://"+m.Addr()+"/0 JOB ...")
		c := &redisurl.Config{Kind: redisurl.Single, Single: &redis.Options{Addr: m.Addr()}}
		c.SetTimeouts(timeout)
		c.SetBufferSizes(redisBuffer, redisPipelineBuffer)
		rdb := c.NewClient()
		return rdb, func() { _ = rdb.Close(); m.Close() }, nil
	}
	c, err := redisurl.Parse(o.redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis-url: %w", err)
	}
	c.SetTimeouts(timeout)
	c.SetBufferSizes(redisBuffer, redisPipelineBuffer)
	rdb := c.NewClient()
	log.Info("redis", "kind", c.Kind.String(), "url", redisurl.Redact(o.redisURL))
	return rdb, func() { _ = rdb.Close() }, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, o, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %v\n", err)
		return 2
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %v\n", err)
		return 2
	}
	redis.SetLogger(redisLogger{log})
	rdb, stop, err := newRedis(o, cfg.RedisTimeout, log)
	if err != nil {
		log.Error("redis", "err", err)
		return 1
	}
	defer stop()
	cfg.Logger = log
	srv, err := gateway.New(cfg, rdb)
	if err != nil {
		log.Error("config", "err", err)
		return 2
	}
	logAuth(log, cfg, o)
	if cfg.TLSCertFile != "" {
		defer reloadOnHangup(srv)()
	}
	if o.demo.on(o.redisURL) {
		d := demo.New(publisher.New(rdb, publisher.WithKeyPrefix(cfg.KeyPrefix)), log, demo.WithStepScale(o.demoScale))
		defer d.Close()
		srv.Handle(http.MethodGet, "/", d)
		srv.Handle(http.MethodGet, "/demo/*", d)
		srv.Handle(http.MethodPost, "/demo/jobs", d)
		log.Info("demo mode: open the demo page", "url", demoURL(cfg.Addr))
	}
	if o.pprofAddr != "" {
		stopPprof, err := servePprof(o.pprofAddr, log)
		if err != nil {
			log.Error("pprof", "err", err)
			return 1
		}
		defer stopPprof()
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		log.Error("listen", "err", inUse(err, "--addr", envTwins["addr"]))
		return 1
	}
	start := time.Now()
	if err := srv.Serve(ctx, l); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	log.Info("bye", "uptime", time.Since(start).Round(time.Second))
	return 0
}

// logAuth says at start who may read and publish: loudly when anyone may
// read every job of a real Redis.
func logAuth(log *slog.Logger, cfg gateway.Config, o options) {
	switch {
	case cfg.Auth != nil:
		log.Info("subscriber auth on: streams, snapshots and reports need a token", "issuer", o.jwtIssuer, "audience", o.jwtAudience)
	case o.redisURL != "":
		log.Warn("AUTH IS OFF: anyone who can reach this gateway can watch any job and download its report; set SSEGATE_JWT_SECRET or SSEGATE_JWT_PUBLIC_KEY (see docs/operations.md, Security)")
	}
	if cfg.PublishAuth != nil {
		log.Info("HTTP publishing on: POST /api/reports/{jobId}/events takes publisher tokens")
	}
}

// inUse names the flag that moves a listener when err says its address is
// taken.
func inUse(err error, flagName, env string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: the address is in use; choose another with %s (or %s)", err, flagName, env)
	}
	return err
}

// healthcheck is `gateway healthcheck [flags]`: it asks the /healthz of the
// gateway that the same flags and environment would start (its --addr, on
// loopback when the address names no host) and exits 0 when it answers 200,
// 1 otherwise. It is the container's HEALTHCHECK: the image has no shell
// and no HTTP client.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, _, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gateway healthcheck: %v\n", err)
		return 2
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		fmt.Fprintf(stderr, "gateway healthcheck: --addr %q: %v\n", cfg.Addr, err)
		return 2
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	scheme, client := "http", http.DefaultClient
	if cfg.TLSCertFile != "" {
		// The certificate names the public host, not loopback; this only
		// asks whether the local process answers.
		scheme = "https"
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		fmt.Fprintf(stderr, "gateway healthcheck: %v\n", err)
		return 2
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "gateway healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "gateway healthcheck: /healthz answered %s\n", resp.Status)
		return 1
	}
	return 0
}

// onOff is the value of a flag that is on or off. It is not a boolean flag,
// so that it takes its value as --flag off as well as --flag=off.
type onOff string

func (v *onOff) String() string { return string(*v) }

func (v *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on", "true", "1", "yes":
		*v = "on"
	case "off", "false", "0", "no":
		*v = "off"
	default:
		return fmt.Errorf("want on or off, got %q", s)
	}
	return nil
}

// embeddedAddr is the default listen address with the embedded Redis.
const embeddedAddr = "127.0.0.1:8080"

// demoMode is the value of --demo: auto, on or off. Like every flag it
// takes its value as --demo off or --demo=off.
type demoMode string

func (m *demoMode) String() string { return string(*m) }

func (m *demoMode) Set(v string) error {
	switch strings.ToLower(v) {
	case "auto":
		*m = "auto"
	case "on", "true", "1", "yes":
		*m = "on"
	case "off", "false", "0", "no":
		*m = "off"
	default:
		return fmt.Errorf("want auto, on or off, got %q", v)
	}
	return nil
}

// on reports whether demo mode is on: auto means on with the embedded Redis.
func (m demoMode) on(redisURL string) bool { return m == "on" || m == "auto" && redisURL == "" }

// demoURL is the demo page's URL for a listen address.
func demoURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// redisLogger sends go-redis's internal messages to slog at debug level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// servePprof serves the runtime profiles on their own listener, apart from
// the API (they must not be public). stop closes it.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(l)
	}()
	log.Info("pprof serving", "addr", l.Addr().String())
	return func() { _ = hs.Close(); <-done }, nil
}

// reloadOnHangup reloads the gateway's TLS certificate on each SIGHUP (a
// failure is logged by the gateway, which keeps the current one) until
// stop is called.
func reloadOnHangup(srv *gateway.Server) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-hup:
				_ = srv.ReloadCertificate()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-ended
	}
}
