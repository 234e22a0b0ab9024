package gateway

import (
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/ssegate/pkg/protocol"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	got := Config{}.withDefaults()
	want := Config{
		Addr:                 ":8080",
		KeyPrefix:            "ssegate",
		Heartbeat:            30 * time.Second,
		DefaultTimeout:       5 * time.Minute,
		MaxTimeout:           10 * time.Minute,
		Retry:                2 * time.Second,
		MaxConnections:       10000,
		MaxConnectionsPerJob: 1000,
		ClientBuffer:         64,
		WriteTimeout:         10 * time.Second,
		SendBuffer:           16 << 10,
		ReportMaxBytes:       60 << 10,
		CORSOrigins:          []string{"*"},
		ShutdownGrace:        5 * time.Second,
		ShutdownTimeout:      10 * time.Second,
		PubSubConns:          4,
		Linger:               time.Second,
		JoinTimeout:          5 * time.Second,
		CanaryInterval:       2 * time.Second,
		RedisTimeout:         3 * time.Second,
		MemoryRelease:        10 * time.Second,
		PublishMaxBytes:      1<<20 + 16<<10,
		IdempotencyWindow:    time.Hour,
		Logger:               got.Logger, // checked below
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Config{}.withDefaults() =\n%+v\nwant (the field comments)\n%+v", got, want)
	}
	if got.Logger == nil {
		t.Error("no default Logger")
	} else if got.Logger.Enabled(t.Context(), slog.LevelError) {
		t.Error("the default Logger is not a discard logger")
	}
	if got.Registry != nil {
		t.Error("withDefaults set a Registry; New builds its own")
	}

	// The exported constants say the same as the comments.
	consts := []struct {
		name      string
		got, want any
	}{
		{"Addr", got.Addr, DefaultAddr},
		{"KeyPrefix", got.KeyPrefix, protocol.DefaultPrefix},
		{"Heartbeat", got.Heartbeat, DefaultHeartbeat},
		{"DefaultTimeout", got.DefaultTimeout, DefaultStreamTimeout},
		{"MaxTimeout", got.MaxTimeout, DefaultMaxStreamTimeout},
		{"Retry", got.Retry, DefaultRetry},
		{"MaxConnections", got.MaxConnections, DefaultMaxConnections},
		{"MaxConnectionsPerJob", got.MaxConnectionsPerJob, DefaultMaxConnectionsPerJob},
		{"ClientBuffer", got.ClientBuffer, DefaultClientBuffer},
		{"WriteTimeout", got.WriteTimeout, DefaultWriteTimeout},
		{"ReportMaxBytes", got.ReportMaxBytes, DefaultReportMaxBytes},
		{"ShutdownGrace", got.ShutdownGrace, DefaultShutdownGrace},
		{"ShutdownTimeout", got.ShutdownTimeout, DefaultShutdownGrace + 5*time.Second},
		{"PubSubConns", got.PubSubConns, DefaultPubSubConns},
		{"Linger", got.Linger, DefaultLinger},
		{"JoinTimeout", got.JoinTimeout, DefaultJoinTimeout},
		{"CanaryInterval", got.CanaryInterval, DefaultCanaryInterval},
		{"RedisTimeout", got.RedisTimeout, DefaultRedisTimeout},
		{"MemoryRelease", got.MemoryRelease, DefaultMemoryRelease},
	}
	for _, c := range consts {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigWithDefaultsKeepsSetFields(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	set := Config{
		Addr:                 "127.0.0.1:9000",
		KeyPrefix:            "other",
		Heartbeat:            time.Second,
		DefaultTimeout:       time.Minute,
		MaxTimeout:           2 * time.Minute,
		Retry:                500 * time.Millisecond,
		MaxConnections:       -1,
		MaxConnectionsPerJob: -1,
		ClientBuffer:         3,
		WriteTimeout:         time.Second,
		SendBuffer:           -1,
		ReportMaxBytes:       10,
		CORSOrigins:          []string{"https://a.example", "https://b.example"},
		ShutdownGrace:        time.Second,
		ShutdownTimeout:      3 * time.Second,
		PubSubConns:          256,
		Linger:               -1,
		JoinTimeout:          time.Second,
		CanaryInterval:       time.Second,
		RedisTimeout:         time.Second,
		MemoryRelease:        -time.Second,
		PublishMaxBytes:      100,
		IdempotencyWindow:    time.Minute,
		Logger:               logger,
		Registry:             reg,
	}
	if got := set.withDefaults(); !reflect.DeepEqual(got, set) {
		t.Errorf("withDefaults changed set fields:\n%+v\nwant\n%+v", got, set)
	}
	if err := set.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigShutdownTimeoutFollowsGrace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		grace time.Duration
		want  time.Duration
	}{
		{name: "default grace", grace: 0, want: 10 * time.Second},
		{name: "longer grace", grace: 20 * time.Second, want: 25 * time.Second},
		{name: "short grace", grace: 100 * time.Millisecond, want: 5100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{ShutdownGrace: tt.grace}
			if got := cfg.withDefaults().ShutdownTimeout; got != tt.want {
				t.Errorf("ShutdownTimeout = %v, want %v", got, tt.want)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestConfigWithDefaultsEmptyCORS(t *testing.T) {
	t.Parallel()
	// Only nil means default: an empty list is a mistake Validate reports.
	cfg := Config{CORSOrigins: []string{}}
	if got := cfg.withDefaults().CORSOrigins; got == nil || len(got) != 0 {
		t.Errorf("CORSOrigins = %#v, want the empty list kept", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   Config
		field string // named in the error; "" for valid
	}{
		{name: "zero", cfg: Config{}},
		{name: "unlimited connections", cfg: Config{MaxConnections: -1, MaxConnectionsPerJob: -1}},
		{name: "one client buffer", cfg: Config{ClientBuffer: 1}},
		{name: "one pubsub conn", cfg: Config{PubSubConns: 1}},
		{name: "256 pubsub conns", cfg: Config{PubSubConns: 256}},
		{name: "no linger", cfg: Config{Linger: -1}},
		{name: "1ms retry", cfg: Config{Retry: time.Millisecond}},
		{name: "default timeout equals max", cfg: Config{DefaultTimeout: time.Minute, MaxTimeout: time.Minute}},
		{name: "timeout equals grace", cfg: Config{ShutdownGrace: 7 * time.Second, ShutdownTimeout: 7 * time.Second}},
		{name: "explicit origins", cfg: Config{CORSOrigins: []string{"https://app.example"}}},

		{name: "negative Heartbeat", cfg: Config{Heartbeat: -time.Second}, field: "Heartbeat"},
		{name: "negative DefaultTimeout", cfg: Config{DefaultTimeout: -time.Second}, field: "DefaultTimeout"},
		{name: "negative MaxTimeout", cfg: Config{MaxTimeout: -time.Second}, field: "MaxTimeout"},
		{name: "negative Retry", cfg: Config{Retry: -time.Second}, field: "Retry"},
		{name: "negative WriteTimeout", cfg: Config{WriteTimeout: -time.Second}, field: "WriteTimeout"},
		{name: "negative ShutdownGrace", cfg: Config{ShutdownGrace: -time.Second}, field: "ShutdownGrace"},
		{name: "negative ShutdownTimeout", cfg: Config{ShutdownTimeout: -time.Second}, field: "ShutdownTimeout"},
		{name: "negative JoinTimeout", cfg: Config{JoinTimeout: -time.Second}, field: "JoinTimeout"},
		{name: "negative CanaryInterval", cfg: Config{CanaryInterval: -time.Second}, field: "CanaryInterval"},
		{name: "negative RedisTimeout", cfg: Config{RedisTimeout: -time.Second}, field: "RedisTimeout"},
		{name: "negative IdempotencyWindow", cfg: Config{IdempotencyWindow: -time.Second}, field: "IdempotencyWindow"},
		{name: "negative PublishMaxBytes", cfg: Config{PublishMaxBytes: -1}, field: "PublishMaxBytes"},
		{name: "negative ReportMaxBytes", cfg: Config{ReportMaxBytes: -1}, field: "ReportMaxBytes"},

		{name: "DefaultTimeout above MaxTimeout", cfg: Config{DefaultTimeout: 11 * time.Minute}, field: "DefaultTimeout"},
		{name: "MaxTimeout below default DefaultTimeout", cfg: Config{MaxTimeout: time.Minute}, field: "DefaultTimeout"},
		{name: "ShutdownTimeout below ShutdownGrace", cfg: Config{ShutdownGrace: 10 * time.Second, ShutdownTimeout: 3 * time.Second}, field: "ShutdownTimeout"},
		{name: "ShutdownTimeout below default grace", cfg: Config{ShutdownTimeout: time.Second}, field: "ShutdownTimeout"},
		{name: "negative ClientBuffer", cfg: Config{ClientBuffer: -1}, field: "ClientBuffer"},
		{name: "huge ShutdownGrace", cfg: Config{ShutdownGrace: math.MaxInt64}, field: "ShutdownGrace"},
		{name: "negative PubSubConns", cfg: Config{PubSubConns: -1}, field: "PubSubConns"},
		{name: "too many PubSubConns", cfg: Config{PubSubConns: 257}, field: "PubSubConns"},
		{name: "sub-millisecond Retry", cfg: Config{Retry: 999 * time.Microsecond}, field: "Retry"},
		{name: "nanosecond Retry", cfg: Config{Retry: 1}, field: "Retry"},
		{name: "empty CORS origin", cfg: Config{CORSOrigins: []string{"https://app.example", ""}}, field: "CORSOrigins"},
		{name: "only an empty CORS origin", cfg: Config{CORSOrigins: []string{""}}, field: "CORSOrigins"},
		{name: "empty CORS list", cfg: Config{CORSOrigins: []string{}}, field: "CORSOrigins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v, want an error naming %s", tt.cfg, tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Validate = %q, want it to name %s", err, tt.field)
			}
			if !strings.HasPrefix(err.Error(), "gateway: ") {
				t.Errorf("Validate = %q, want the package prefix", err)
			}
		})
	}
}

func TestConfigValidateDoesNotModify(t *testing.T) {
	t.Parallel()
	origins := []string{"https://app.example"}
	cfg := Config{CORSOrigins: origins}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "" || cfg.Heartbeat != 0 || cfg.Logger != nil || !slices.Equal(cfg.CORSOrigins, origins) {
		t.Errorf("Validate changed its receiver: %+v", cfg)
	}
}
