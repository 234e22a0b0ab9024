// Package redisurl turns the Redis URLs that ssegate accepts into go-redis
// clients. The scheme says which deployment it is, so nothing is guessed:
//
//	redis://[user:pass@]host:port[/db]            one server (rediss:// with TLS)
//	unix://[user:pass@]/path/to/socket[?db=N]     one server over a Unix socket
//	redis+cluster://[user:pass@]host:port?addr=host2:port2&addr=host3:port3
//	                                              Redis Cluster seeds (rediss+cluster:// with TLS)
//	redis+sentinel://[user:pass@]host:port?addr=host2:port2&master=NAME[/db]
//	                                              Sentinels of the master group NAME
//	                                              (rediss+sentinel:// with TLS)
//
// In a Sentinel URL the user and password are the master's and replicas'
// (what the data nodes ask for); the Sentinels' own, if they have any, go in
// the query as sentinel_username and sentinel_password. Every other query
// parameter is go-redis's (dial_timeout=3s, pool_size=20, …) and an unknown
// one is an error.
package redisurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind is the kind of Redis deployment a URL names.
type Kind int

// The deployments.
const (
	Single   Kind = iota // one server: redis://, rediss://, unix://
	Cluster              // Redis Cluster: redis+cluster://, rediss+cluster://
	Sentinel             // a master group behind Sentinels: redis+sentinel://, rediss+sentinel://
)

func (k Kind) String() string {
	switch k {
	case Cluster:
		return "cluster"
	case Sentinel:
		return "sentinel"
	}
	return "single"
}

// Config is a parsed Redis URL: the options of the one go-redis client its
// Kind calls for. Exactly one of Single, Cluster and Failover is set.
type Config struct {
	Kind     Kind
	Single   *redis.Options
	Cluster  *redis.ClusterOptions
	Failover *redis.FailoverOptions

	query url.Values // the URL's own parameters, to tell set from default
}

// Parse parses a Redis URL of one of the forms in the package comment.
func Parse(raw string) (*Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", errors.Unwrap(err))
	}
	q := u.Query()
	base, kind, ok := strings.Cut(u.Scheme, "+")
	if ok && base != "redis" && base != "rediss" || !ok && base != "redis" && base != "rediss" && base != "unix" {
		return nil, fmt.Errorf("redis URL: unknown scheme %q: want redis, rediss, unix, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel", u.Scheme)
	}
	c := &Config{query: q}
	switch kind {
	case "":
		if q.Has("master_name") || q.Has("master") {
			return nil, errors.New("redis URL: a master name needs the redis+sentinel:// scheme (redis+sentinel://host:port?addr=host2:port2&master=NAME)")
		}
		if q.Has("addr") {
			return nil, errors.New("redis URL: more addresses (addr=) need the redis+cluster:// or redis+sentinel:// scheme")
		}
		c.Kind = Single
		c.Single, err = redis.ParseURL(raw)
	case "cluster":
		c.Kind = Cluster
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("redis URL: a cluster URL has no database (path %q): Redis Cluster has database 0 only", u.Path)
		}
		v := *u
		v.Scheme = base
		c.Cluster, err = redis.ParseClusterURL(v.String())
	case "sentinel":
		c.Kind = Sentinel
		c.Failover, err = parseSentinel(u, base)
	default:
		return nil, fmt.Errorf("redis URL: unknown scheme %q: want redis, rediss, unix, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel", u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("redis URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return c, nil
}

// parseSentinel rewrites u into go-redis's failover URL (the master name as
// master_name, the data nodes' credentials as username and password, the
// Sentinels' kept apart) and parses that.
func parseSentinel(u *url.URL, scheme string) (*redis.FailoverOptions, error) {
	q := u.Query()
	master := q.Get("master")
	if master == "" {
		return nil, errors.New("a sentinel URL needs the master group's name: ?master=NAME")
	}
	q.Del("master")
	if u.User != nil {
		q.Set("username", u.User.Username())
		if p, ok := u.User.Password(); ok {
			q.Set("password", p)
		}
	}
	sentUser, sentPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	q.Set("master_name", master)
	v := *u
	v.Scheme, v.User, v.RawQuery = scheme, nil, q.Encode()
	o, err := redis.ParseFailoverURL(v.String())
	if err != nil {
		return nil, err
	}
	o.SentinelUsername, o.SentinelPassword = sentUser, sentPass
	return o, nil
}

// Has reports whether the URL names the query parameter name (to tell a
// value the operator chose from go-redis's default).
func (c *Config) Has(name string) bool { return c.query.Has(name) }

// SetTimeouts bounds every Redis call of the client by d: each of the dial,
// read, write and pool-wait timeouts that the URL does not name becomes d,
// and the client honours its calls' context deadlines (without that,
// go-redis ignores a call's deadline on the socket and waits its own
// defaults, 5 s per read or dial) unless the URL says otherwise with
// context_timeout_enabled (only a Sentinel URL may).
func (c *Config) SetTimeouts(d time.Duration) {
	var ctxTimeout *bool
	var dial, read, write, pool *time.Duration
	switch {
	case c.Single != nil:
		o := c.Single
		ctxTimeout, dial, read, write, pool = &o.ContextTimeoutEnabled, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout
	case c.Cluster != nil:
		o := c.Cluster
		ctxTimeout, dial, read, write, pool = &o.ContextTimeoutEnabled, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout
	case c.Failover != nil:
		o := c.Failover
		ctxTimeout, dial, read, write, pool = &o.ContextTimeoutEnabled, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout
	default:
		return
	}
	if !c.Has("context_timeout_enabled") {
		*ctxTimeout = true
	}
	for name, p := range map[string]*time.Duration{
		"dial_timeout": dial, "read_timeout": read, "write_timeout": write, "pool_timeout": pool,
	} {
		if !c.Has(name) {
			*p = d
		}
	}
}

// SetBufferSizes sets the read and write buffer of each pooled connection
// to size, and of each pipeline connection to pipeline, unless the URL set
// them (go-redis reads pipeline_read_buffer_size= and
// pipeline_write_buffer_size=). go-redis's defaults (32 KiB, and 128 KiB for pipelines) suit large
// values; a gateway's replies are events of a few hundred bytes, and the
// defaults made its pools' buffers most of an idle gateway's fixed memory.
func (c *Config) SetBufferSizes(size, pipeline int) {
	var read, write, pread, pwrite *int
	switch {
	case c.Single != nil:
		o := c.Single
		read, write, pread, pwrite = &o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize
	case c.Cluster != nil:
		o := c.Cluster
		read, write, pread, pwrite = &o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize
	case c.Failover != nil:
		o := c.Failover
		read, write, pread, pwrite = &o.ReadBufferSize, &o.WriteBufferSize, &o.PipelineReadBufferSize, &o.PipelineWriteBufferSize
	default:
		return
	}
	for _, f := range []struct {
		p *int
		n int
	}{{read, size}, {write, size}, {pread, pipeline}, {pwrite, pipeline}} {
		if *f.p == 0 {
			*f.p = f.n
		}
	}
}

// NewClient returns the client the URL calls for: a *redis.Client, a
// *redis.ClusterClient, or a failover *redis.Client.
func (c *Config) NewClient() redis.UniversalClient {
	switch {
	case c.Cluster != nil:
		return redis.NewClusterClient(c.Cluster)
	case c.Failover != nil:
		return redis.NewFailoverClient(c.Failover)
	}
	return redis.NewClient(c.Single)
}

// NewClient parses raw and returns the client it calls for.
func NewClient(raw string) (redis.UniversalClient, error) {
	c, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return c.NewClient(), nil
}

// Redact returns raw with its password, and any password in its query,
// replaced by "xxxxx", for logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sentinel_password"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}
