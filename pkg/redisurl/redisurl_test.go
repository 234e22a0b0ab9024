package redisurl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/redisurl"
)

func TestParse(t *testing.T) {
	t.Parallel()
	t.Run("single", func(t *testing.T) {
		c := parse(t, "redis://u:p@10.0.0.1:6380/2?pool_size=7")
		if c.Kind != redisurl.Single || c.Single == nil || c.Cluster != nil || c.Failover != nil {
			t.Fatalf("kind %v, options %+v", c.Kind, c)
		}
		o := c.Single
		if o.Addr != "10.0.0.1:6380" || o.DB != 2 || o.Username != "u" || o.Password != "p" || o.PoolSize != 7 || o.TLSConfig != nil {
			t.Errorf("options %+v", o)
		}
		if c := parse(t, "rediss://h:1"); c.Single.TLSConfig == nil {
			t.Error("rediss:// without TLS")
		}
		if c := parse(t, "unix:///run/redis.sock?db=3"); c.Single.Network != "unix" || c.Single.Addr != "/run/redis.sock" || c.Single.DB != 3 {
			t.Errorf("unix: %+v", c.Single)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		c := parse(t, "redis+cluster://u:p@h1:7001?addr=h2:7002&addr=h3:7003&read_timeout=2s")
		if c.Kind != redisurl.Cluster || c.Cluster == nil {
			t.Fatalf("kind %v", c.Kind)
		}
		o := c.Cluster
		if strings.Join(o.Addrs, ",") != "h1:7001,h2:7002,h3:7003" || o.Username != "u" || o.Password != "p" || o.ReadTimeout != 2*time.Second || o.TLSConfig != nil {
			t.Errorf("options %+v", o)
		}
		if c := parse(t, "rediss+cluster://h1:7001"); c.Cluster.TLSConfig == nil || c.Cluster.TLSConfig.ServerName != "h1" {
			t.Errorf("rediss+cluster TLS %+v", c.Cluster.TLSConfig)
		}
		if _, ok := c.NewClient().(*redis.ClusterClient); !ok {
			t.Error("a cluster URL's client is not a ClusterClient")
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		c := parse(t, "redis+sentinel://u:p@s1:26379/1?addr=s2:26379&addr=s3:26379&master=mymaster&sentinel_password=sp")
		if c.Kind != redisurl.Sentinel || c.Failover == nil {
			t.Fatalf("kind %v", c.Kind)
		}
		o := c.Failover
		if o.MasterName != "mymaster" || strings.Join(o.SentinelAddrs, ",") != "s1:26379,s2:26379,s3:26379" || o.DB != 1 {
			t.Errorf("options %+v", o)
		}
		if o.Username != "u" || o.Password != "p" || o.SentinelUsername != "" || o.SentinelPassword != "sp" {
			t.Errorf("credentials: data %q/%q, sentinel %q/%q", o.Username, o.Password, o.SentinelUsername, o.SentinelPassword)
		}
		if c := parse(t, "rediss+sentinel://s1:26379?master=m"); c.Failover.TLSConfig == nil {
			t.Error("rediss+sentinel:// without TLS")
		}
	})
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"http://h:1", `unknown scheme "http"`},
		{"redis+raft://h:1", `unknown scheme "redis+raft"`},
		{"unix+cluster:///x", `unknown scheme "unix+cluster"`},
		{"redis://h:1?master_name=m", "redis+sentinel://"},
		{"redis://h:1?addr=h2:2", "redis+cluster:// or redis+sentinel://"},
		{"redis+sentinel://h:1?addr=h2:2", "?master=NAME"},
		{"redis+cluster://h:1/3", "database 0 only"},
		{"redis+cluster://h:1?no_such_option=1", "no_such_option"},
		{"redis://h:1/x", "database"},
		{"redis://[::1", "redis URL"},
	} {
		_, err := redisurl.Parse(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.url, err, tc.want)
		}
	}
}

func TestSetTimeouts(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"redis://h:1?read_timeout=9s", "redis+cluster://h:1?read_timeout=9s", "redis+sentinel://h:1?master=m&read_timeout=9s"} {
		c := parse(t, raw)
		c.SetTimeouts(300 * time.Millisecond)
		var ctx bool
		var dial, read, write, pool time.Duration
		switch {
		case c.Single != nil:
			o := c.Single
			ctx, dial, read, write, pool = o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout
		case c.Cluster != nil:
			o := c.Cluster
			ctx, dial, read, write, pool = o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout
		default:
			o := c.Failover
			ctx, dial, read, write, pool = o.ContextTimeoutEnabled, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout
		}
		const d = 300 * time.Millisecond
		if !ctx || dial != d || write != d || pool != d || read != 9*time.Second {
			t.Errorf("%s: context %v dial %v read %v (the URL's) write %v pool %v", raw, ctx, dial, read, write, pool)
		}
	}
}

func TestSetBufferSizes(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"redis://h:1?pipeline_read_buffer_size=65536", "redis+cluster://h:1?pipeline_read_buffer_size=65536", "redis+sentinel://h:1?master=m&pipeline_read_buffer_size=65536"} {
		c := parse(t, raw)
		c.SetBufferSizes(16<<10, 32<<10)
		var read, write, pread, pwrite int
		switch {
		case c.Single != nil:
			o := c.Single
			read, write, pread, pwrite = o.ReadBufferSize, o.WriteBufferSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize
		case c.Cluster != nil:
			o := c.Cluster
			read, write, pread, pwrite = o.ReadBufferSize, o.WriteBufferSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize
		default:
			o := c.Failover
			read, write, pread, pwrite = o.ReadBufferSize, o.WriteBufferSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize
		}
		if read != 16<<10 || write != 16<<10 || pwrite != 32<<10 || pread != 64<<10 {
			t.Errorf("%s: read %d write %d pipeline read %d (the URL's) pipeline write %d", raw, read, write, pread, pwrite)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := redisurl.Redact("redis+sentinel://u:secret1@h:1?master=m&sentinel_password=secret2&password=secret3")
	if strings.Contains(got, "secret") || !strings.Contains(got, "master=m") {
		t.Errorf("Redact = %q", got)
	}
}

func parse(t *testing.T, raw string) *redisurl.Config {
	t.Helper()
	c, err := redisurl.Parse(raw)
	if err != nil {
		t.Fatalf("Parse(%q): %v", raw, err)
	}
	return c
}
