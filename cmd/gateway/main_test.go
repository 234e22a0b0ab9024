package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/gateway"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// sampleEnv has a valid value of every environment twin.
var sampleEnv = map[string]string{
	"SSEGATE_ADDR": "127.0.0.1:9999", "REDIS_URL": "redis://example:6379/2", "SSEGATE_KEY_PREFIX": "acme",
	"SSEGATE_HEARTBEAT": "15s", "SSEGATE_DEFAULT_TIMEOUT": "2m", "SSEGATE_MAX_TIMEOUT": "20m", "SSEGATE_RETRY": "3s",
	"SSEGATE_MAX_CONNECTIONS": "0", "SSEGATE_MAX_CONNECTIONS_PER_JOB": "7", "SSEGATE_CLIENT_BUFFER": "9",
	"SSEGATE_REPORT_MAX_BYTES": "100", "SSEGATE_CORS_ORIGINS": "https://a.example, https://b.example",
	"SSEGATE_SHUTDOWN_GRACE": "1s", "SSEGATE_SHUTDOWN_TIMEOUT": "12s", "SSEGATE_SEND_BUFFER": "65536",
	"SSEGATE_WRITE_TIMEOUT": "3s", "SSEGATE_PUBSUB_CONNS": "2", "SSEGATE_JOIN_TIMEOUT": "1s", "SSEGATE_LINGER": "250ms",
	"SSEGATE_CANARY_INTERVAL": "500ms", "SSEGATE_REDIS_TIMEOUT": "2s", "SSEGATE_MEMORY_RELEASE_INTERVAL": "-1s", "SSEGATE_LOG_LEVEL": "debug",
	"SSEGATE_LOG_FORMAT": "json", "SSEGATE_EMBEDDED_REDIS_ADDR": "127.0.0.1:7000",
	"SSEGATE_DEMO": "off", "SSEGATE_ACCESS_LOG": "off", "SSEGATE_DEMO_STEP_SCALE": "0.5", "SSEGATE_PPROF_ADDR": "127.0.0.1:6060",
	"SSEGATE_JWT_SECRET": "a-subscriber-secret-of-32-bytes-at-least", "SSEGATE_JWT_PUBLIC_KEY": "testdata/jwt-public.pem",
	"SSEGATE_PUBLISHER_JWT_SECRET": "a-publisher-secret-of-32-bytes-at-least", "SSEGATE_PUBLISHER_JWT_PUBLIC_KEY": "testdata/jwt-public.pem",
	"SSEGATE_JWT_ISSUER": "https://app.example", "SSEGATE_JWT_AUDIENCE": "ssegate", "SSEGATE_JWT_COOKIE": "ssegate_token",
	"SSEGATE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1", "SSEGATE_MAX_CONNECTIONS_PER_IP": "20",
	"SSEGATE_PUBLISH_MAX_BYTES": "4096", "SSEGATE_IDEMPOTENCY_WINDOW": "10m",
	"SSEGATE_TLS_CERT": "/etc/ssegate/tls/tls.crt", "SSEGATE_TLS_KEY": "/etc/ssegate/tls/tls.key", // read by gateway.New, not parseConfig
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg, o, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:8080" || cfg.KeyPrefix != "ssegate" || cfg.Heartbeat != 30*time.Second ||
		cfg.DefaultTimeout != 5*time.Minute || cfg.MaxTimeout != 10*time.Minute || cfg.Retry != 2*time.Second ||
		cfg.MaxConnections != gateway.DefaultMaxConnections || cfg.MaxConnectionsPerJob != gateway.DefaultMaxConnectionsPerJob ||
		cfg.ReportMaxBytes != 60<<10 || len(cfg.CORSOrigins) != 1 || cfg.CORSOrigins[0] != "*" {
		t.Errorf("defaults: %+v", cfg)
	}
	if o.redisURL != "" || o.embeddedAddr != "127.0.0.1:6380" || o.logLevel != "info" || o.logFormat != "text" || o.demo != "auto" {
		t.Errorf("options: %+v", o)
	}
}

// Every flag has an environment twin, and every twin works.
func TestEveryFlagHasAWorkingEnvTwin(t *testing.T) {
	t.Parallel()
	var names []string
	// The flags parseConfig defines, read back from its --help output.
	var help bytes.Buffer
	if _, _, err := parseConfig([]string{"--help"}, env(nil), &help); err != flag.ErrHelp {
		t.Fatalf("--help: %v", err)
	}
	for _, line := range strings.Split(help.String(), "\n") {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "--"); ok {
			names = append(names, strings.Fields(f)[0])
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d flags in --help:\n%s", len(names), help.String())
	}
	for _, name := range names {
		if envTwins[name] == "" {
			t.Errorf("flag --%s has no environment twin", name)
		}
	}
	values := sampleEnv
	for _, twin := range envTwins {
		if _, ok := values[twin]; !ok {
			t.Errorf("no test value for %s", twin)
		}
	}
	cfg, o, err := parseConfig(nil, env(values), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := gateway.Config{
		Addr: "127.0.0.1:9999", KeyPrefix: "acme", Heartbeat: 15 * time.Second, DefaultTimeout: 2 * time.Minute,
		MaxTimeout: 20 * time.Minute, Retry: 3 * time.Second, MaxConnections: -1, MaxConnectionsPerJob: 7,
		ClientBuffer: 9, ReportMaxBytes: 100, ShutdownGrace: time.Second, ShutdownTimeout: 12 * time.Second,
		SendBuffer: 65536, WriteTimeout: 3 * time.Second, PubSubConns: 2, JoinTimeout: time.Second, Linger: 250 * time.Millisecond,
		CanaryInterval: 500 * time.Millisecond, RedisTimeout: 2 * time.Second, MemoryRelease: -time.Second, NoAccessLog: true,
		AuthCookie: "ssegate_token", MaxConnectionsPerIP: 20, PublishMaxBytes: 4096, IdempotencyWindow: 10 * time.Minute,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")},
		TLSCertFile:    "/etc/ssegate/tls/tls.crt", TLSKeyFile: "/etc/ssegate/tls/tls.key",
	}
	got := cfg
	if got.Auth == nil || got.PublishAuth == nil {
		t.Errorf("no verifiers from the JWT settings: %+v", got)
	}
	got.CORSOrigins, got.Auth, got.PublishAuth = nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("from the environment:\n got  %+v\n want %+v", got, want)
	}
	if strings.Join(cfg.CORSOrigins, "|") != "https://a.example|https://b.example" {
		t.Errorf("CORS origins %q", cfg.CORSOrigins)
	}
	if o.redisURL != "redis://example:6379/2" || o.logLevel != "debug" || o.logFormat != "json" ||
		o.embeddedAddr != "127.0.0.1:7000" || o.demo != "off" || o.demoScale != 0.5 || o.pprofAddr != "127.0.0.1:6060" {
		t.Errorf("options from the environment: %+v", o)
	}
}

func TestFlagsWinOverEnv(t *testing.T) {
	t.Parallel()
	cfg, _, err := parseConfig([]string{"--heartbeat", "5s", "--max-connections-per-job", "0"},
		env(map[string]string{"SSEGATE_HEARTBEAT": "15s", "SSEGATE_MAX_CONNECTIONS_PER_JOB": "3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Heartbeat != 5*time.Second || cfg.MaxConnectionsPerJob != -1 {
		t.Errorf("heartbeat %v, per-job %d", cfg.Heartbeat, cfg.MaxConnectionsPerJob)
	}
}

func TestBadSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad duration flag", []string{"--heartbeat", "often"}, nil, "heartbeat"},
		{"bad duration env", nil, map[string]string{"SSEGATE_RETRY": "soon"}, "SSEGATE_RETRY"},
		{"bad number env", nil, map[string]string{"SSEGATE_CLIENT_BUFFER": "many"}, "SSEGATE_CLIENT_BUFFER"},
		{"default above max", []string{"--default-timeout", "20m"}, nil, "DefaultTimeout"},
		{"empty origins", []string{"--cors-origins", " , "}, nil, "cors-origins"},
		{"stray argument", []string{"serve"}, nil, "unexpected arguments"},
		{"unknown flag", []string{"--nope"}, nil, "not defined"},
		{"bad demo", []string{"--demo=maybe"}, nil, "auto, on or off"},
		{"bad demo scale", []string{"--demo-step-scale", "0"}, nil, "demo-step-scale"},
		{"short JWT secret", nil, map[string]string{"SSEGATE_JWT_SECRET": "secret"}, "--jwt-secret: token: an HS256 secret needs at least 32 bytes"},
		{"short publisher secret", []string{"--publisher-jwt-secret", "abc"}, nil, "--publisher-jwt-secret"},
		{"missing public key file", []string{"--jwt-public-key", "testdata/nope.pem"}, nil, "--jwt-public-key: open testdata/nope.pem"},
		{"not a PEM file", []string{"--jwt-public-key", "main_test.go"}, nil, "no PEM public key"},
		{"bad trusted proxy", []string{"--trusted-proxies", "10.0.0.0/8,proxy.local"}, nil, `"proxy.local" is neither a CIDR nor an address`},
		{"negative per-IP limit", []string{"--max-connections-per-ip", "-1"}, nil, "--max-connections-per-ip"},
		{"TLS cert without key", []string{"--tls-cert", "tls.crt"}, nil, "--tls-cert and --tls-key (SSEGATE_TLS_CERT, SSEGATE_TLS_KEY) go together"},
		{"TLS key without cert", nil, map[string]string{"SSEGATE_TLS_KEY": "tls.key"}, "--tls-cert and --tls-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := parseConfig(tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--retry", "x"}, env(nil), &out, &errb); code != 2 || errb.Len() == 0 {
		t.Errorf("bad flag: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"--log-format", "xml"}, env(nil), &out, &errb); code != 2 {
		t.Errorf("bad log format: exit %d", code)
	}
	errb.Reset()
	if code := run(context.Background(), []string{"--help"}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "SSEGATE_HEARTBEAT") {
		t.Errorf("--help: exit %d, %q", code, out.String())
	}
	// A Redis URL that cannot be parsed fails before serving.
	errb.Reset()
	if code := run(context.Background(), []string{"--redis-url", "http://nope", "--addr", "127.0.0.1:0"}, env(nil), &out, &errb); code != 1 {
		t.Errorf("bad Redis URL: exit %d, %q", code, errb.String())
	}
}

// TestRedisTimeoutsFromFlagAndURL: --redis-timeout bounds each of the
// client's timeouts, and a timeout the URL names wins.
func TestRedisTimeoutsFromFlagAndURL(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	rdb, stop, err := newRedis(options{redisURL: "redis://127.0.0.1:1/0?read_timeout=7s&pool_timeout=9s"}, 300*time.Millisecond, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	o := rdb.(*redis.Client).Options()
	if !o.ContextTimeoutEnabled || o.DialTimeout != 300*time.Millisecond || o.WriteTimeout != 300*time.Millisecond ||
		o.ReadTimeout != 7*time.Second || o.PoolTimeout != 9*time.Second {
		t.Errorf("options: context=%v dial=%v read=%v write=%v pool=%v; want true, 300ms, 7s (URL), 300ms, 9s (URL)",
			o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout)
	}
}

// TestRedisURLSchemes: the URL's scheme picks the client, and the old
// --redis-mode environment variable is refused with what replaced it.
func TestRedisURLSchemes(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	for raw, want := range map[string]string{
		"redis://127.0.0.1:1/0":                                         "*redis.Client",
		"redis+cluster://127.0.0.1:1?addr=127.0.0.1:2":                  "*redis.ClusterClient",
		"redis+sentinel://127.0.0.1:1?addr=127.0.0.1:2&master=mymaster": "*redis.Client",
	} {
		rdb, stop, err := newRedis(options{redisURL: raw}, time.Second, log)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := fmt.Sprintf("%T", rdb); got != want {
			t.Errorf("%s: client %s, want %s", raw, got, want)
		}
		stop()
	}
	if _, _, err := newRedis(options{redisURL: "redis://127.0.0.1:1?master_name=m"}, time.Second, log); err == nil || !strings.Contains(err.Error(), "redis+sentinel://") {
		t.Errorf("master_name on redis://: %v", err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--addr", "127.0.0.1:0"}, env(map[string]string{"SSEGATE_REDIS_MODE": "cluster"}), &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "redis+cluster://") {
		t.Errorf("SSEGATE_REDIS_MODE set: exit %d, %q", code, errb.String())
	}
}

// TestHealthcheck: `gateway healthcheck` exits 0 when the /healthz of the
// gateway its flags name answers 200, and 1 when it does not or nothing
// listens.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	check := func(args ...string) int {
		var stderr bytes.Buffer
		code := run(context.Background(), append([]string{"healthcheck"}, args...), env(nil), io.Discard, &stderr)
		t.Logf("healthcheck %v: %d %s", args, code, stderr.String())
		return code
	}
	if code := check("--addr", addr); code != 0 {
		t.Errorf("healthy: exit %d, want 0", code)
	}
	if code := check("--addr", ":"+port); code != 0 { // no host: loopback
		t.Errorf("healthy on :%s: exit %d, want 0", port, code)
	}
	mu.Lock()
	status = http.StatusServiceUnavailable
	mu.Unlock()
	if code := check("--addr", addr); code != 1 {
		t.Errorf("503: exit %d, want 1", code)
	}
	srv.Close()
	if code := check("--addr", addr); code != 1 {
		t.Errorf("nothing listening: exit %d, want 1", code)
	}
	if code := check("--addr", "nonsense"); code != 2 {
		t.Errorf("bad --addr: exit %d, want 2", code)
	}
}

// TestEveryFlagTakesItsValueEitherWay: every flag takes `--flag value` as
// well as `--flag=value`, with the same result (`--demo off` was once an
// "unexpected arguments" error: the flag parsed as a boolean).
func TestEveryFlagTakesItsValueEitherWay(t *testing.T) {
	t.Parallel()
	// Flags that go in pairs are tried with the other one in the environment.
	partner := map[string]string{"SSEGATE_TLS_CERT": "SSEGATE_TLS_KEY", "SSEGATE_TLS_KEY": "SSEGATE_TLS_CERT"}
	for name, twin := range envTwins {
		v := sampleEnv[twin]
		base, both := map[string]string{}, map[string]string{twin: v}
		if p, ok := partner[twin]; ok {
			base[p], both[p] = sampleEnv[p], sampleEnv[p]
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			spaced, so, err := parseConfig([]string{"--" + name, v}, env(base), io.Discard)
			if err != nil {
				t.Fatalf("--%s %s: %v", name, v, err)
			}
			joined, jo, err := parseConfig([]string{"--" + name + "=" + v}, env(base), io.Discard)
			if err != nil {
				t.Fatalf("--%s=%s: %v", name, v, err)
			}
			fromEnv, eo, err := parseConfig(nil, env(both), io.Discard)
			if err != nil {
				t.Fatalf("%s=%s: %v", twin, v, err)
			}
			if !reflect.DeepEqual(spaced, joined) || so != jo || !reflect.DeepEqual(spaced, fromEnv) || so != eo {
				t.Errorf("--%s %s, --%s=%s and %s=%s differ:\n %+v %+v\n %+v %+v\n %+v %+v", name, v, name, v, twin, v, spaced, so, joined, jo, fromEnv, eo)
			}
		})
	}
}

// TestEmbeddedListensOnLoopback: with the embedded Redis (no REDIS_URL) the
// demo and its public POST /demo/jobs are on, so the default address is
// loopback; an explicit --addr or SSEGATE_ADDR, or a real Redis, keeps
// the usual default.
func TestEmbeddedListensOnLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"embedded", nil, nil, "127.0.0.1:8080"},
		{"embedded, --addr", []string{"--addr", ":9000"}, nil, ":9000"},
		{"embedded, SSEGATE_ADDR", nil, map[string]string{"SSEGATE_ADDR": ":9001"}, ":9001"},
		{"real Redis", []string{"--redis-url", "redis://127.0.0.1:6379/0"}, nil, ":8080"},
	} {
		cfg, _, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Addr != tc.want {
			t.Errorf("%s: addr %q, want %q", tc.name, cfg.Addr, tc.want)
		}
	}
}

// TestPortInUseNamesTheFlag: a port already taken fails at start with a
// message naming the flag that moves it.
func TestPortInUseNamesTheFlag(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"HTTP port", []string{"--addr", taken.Addr().String(), "--embedded-redis-addr", "127.0.0.1:0", "--demo", "off"}, "--addr"},
		{"embedded Redis port", []string{"--addr", "127.0.0.1:0", "--embedded-redis-addr", taken.Addr().String(), "--demo", "off"}, "--embedded-redis-addr"},
	} {
		var stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code := run(ctx, tc.args, env(nil), io.Discard, &stderr)
		cancel()
		if code != 1 || !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "in use") {
			t.Errorf("%s taken: exit %d, stderr %q; want 1 and a message naming %s", tc.name, code, stderr.String(), tc.want)
		}
	}
}

// TestJSONLogDurationsInMilliseconds: a duration in a JSON log line is a
// number of milliseconds.
func TestJSONLogDurationsInMilliseconds(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := newLogger("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "took", 1500*time.Microsecond)
	if !strings.Contains(buf.String(), `"took":1.5`) {
		t.Errorf("JSON line %s, want took in milliseconds (1.5)", buf.String())
	}
}
