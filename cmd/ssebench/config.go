package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// config is one benchmark run, from the command line.
type config struct {
	floor bool // ssebench floor: the floor server instead of gateways

	gateways    []string // base URLs, clients spread round-robin
	redisURL    string
	keyPrefix   string
	gatewayPIDs []int
	spreadJobs  bool // each job's clients over every gateway

	clients          int
	jobs             int
	rate             float64 // events/s over all jobs
	duration         time.Duration
	warmup           time.Duration
	settle           time.Duration
	drain            time.Duration
	payload          int
	resumeFromMiddle int
	idle             bool
	connectRate      float64
	connectTimeout   time.Duration
	publishers       int
	heartbeat        time.Duration // floor server only
	streamTimeout    time.Duration
	jobPrefix        string
	jwtSecretEnv     string // mint a token per job with the secret in this variable

	csvPath    string
	jsonOut    bool
	label      string
	progress   time.Duration
	cpuProfile string
}

// listFlag is a repeatable flag whose values may also be comma lists.
type listFlag struct{ vals *[]string }

func (l listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l listFlag) Set(s string) error {
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.vals = append(*l.vals, v)
		}
	}
	return nil
}

const usageHead = `usage: ssebench [run] [flags]     benchmark gateways (the default)
       ssebench floor [flags]     the same load through the thinnest possible server

ssebench opens --clients SSE streams over --jobs jobs (client i watches job
i mod jobs, on gateway i mod gateways; with --spread-jobs on gateway
(i mod jobs + i div jobs) mod gateways), publishes progress events at --rate
per second (over all jobs) for --duration, each carrying its publish time,
and reports connect time, deliveries/s, end-to-end latency (publish -> client
parsed), lost/duplicated/out-of-order events, and the server's RSS and CPU.

"floor" starts a minimal server (a child ssebench process: raw TCP, no HTTP
framework, no Redis, pre-encoded frames written straight to the sockets) and
measures it with the same clients, so every figure can be put against what
this machine can do at all. --gateway, --redis-url and --gateway-pid do not
apply to it.

Exit status: 0 when every event reached every client exactly once and in
order, 1 when not (or the run failed), 2 for bad flags.

flags:
`

// parseConfig parses the arguments after the subcommand.
func parseConfig(floor bool, args []string, out io.Writer) (*config, error) {
	c := &config{floor: floor}
	var gateways, pids []string
	name := "ssebench run"
	if floor {
		name = "ssebench floor"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Var(listFlag{&gateways}, "gateway", "gateway base URL; repeat or comma-separate for several (default http://127.0.0.1:8080)")
	fs.StringVar(&c.redisURL, "redis-url", "redis://127.0.0.1:6380/0", "Redis to publish to: the gateways' Redis (default: the gateway's embedded one)")
	fs.StringVar(&c.keyPrefix, "key-prefix", protocol.DefaultPrefix, "Redis key prefix, as the gateways use")
	fs.BoolVar(&c.spreadJobs, "spread-jobs", false, "spread each job's clients over every gateway, as a load balancer would (by default client i goes to gateway i mod gateways, which puts each job on one gateway when --jobs is a multiple of the gateways)")
	fs.Var(listFlag{&pids}, "gateway-pid", "gateway process IDs (repeat or comma list) to read CPU and RSS from /proc; default: each gateway's /metrics")
	fs.IntVar(&c.clients, "clients", 100, "SSE clients")
	fs.IntVar(&c.jobs, "jobs", 10, "jobs the clients watch")
	fs.Float64Var(&c.rate, "rate", 100, "events published per second, over all jobs (0: none)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured load window (with --idle or --rate 0: how long the streams are held)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "publishing before the measured window (checked for loss, not measured)")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "quiet time after all clients connected, over which idle CPU is measured")
	fs.DurationVar(&c.drain, "drain", 15*time.Second, "how long to wait, after the jobs complete, for every client to get everything")
	fs.IntVar(&c.payload, "payload", 0, "pad each progress event's data JSON to about this many bytes (0: no padding)")
	fs.IntVar(&c.resumeFromMiddle, "resume-from-middle", 0, "publish N events per job first, and connect every client with the Last-Event-ID of the N/2-th: each must get exactly the second half")
	fs.BoolVar(&c.idle, "idle", false, "publish nothing: hold the streams for --duration (heartbeats only) and measure RSS and CPU")
	fs.Float64Var(&c.connectRate, "connect-rate", 0, "new connections per second (0: all at once)")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", time.Minute, "how long to wait for every client to connect")
	fs.IntVar(&c.publishers, "publishers", 16, "publisher goroutines (each job is published by one, in order)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 30*time.Second, "floor only: heartbeat interval of the floor server")
	fs.DurationVar(&c.streamTimeout, "stream-timeout", 10*time.Minute, "timeout query parameter of each stream (the gateway clamps it to its max; clients resume after it)")
	fs.StringVar(&c.jobPrefix, "job-prefix", "", "job ID prefix (default: bench-<random>-, so runs never share jobs)")
	fs.StringVar(&c.jwtSecretEnv, "jwt-secret-env", "", "environment variable holding the gateways' HS256 secret: each client then streams with a token for its job in access_token (empty: no token)")
	fs.StringVar(&c.csvPath, "csv", "", "append one row with every number of the run to this CSV file (header when new)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the result as one JSON line on stdout, the table on stderr")
	fs.StringVar(&c.label, "label", "", "a name for the run, carried into the JSON and CSV (e.g. the scenario)")
	fs.DurationVar(&c.progress, "progress", time.Second, "interval of the live progress line on stderr (0: none)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write ssebench's own CPU profile to this file (to see where a saturated load generator spends its time)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(fs.Output(), "  --%s%s\n      %s\n", f.Name, def, f.Usage)
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(gateways) == 0 {
		gateways = []string{"http://127.0.0.1:8080"}
	}
	for _, g := range gateways {
		u, err := normalizeURL(g)
		if err != nil {
			return nil, fmt.Errorf("--gateway %q: %w", g, err)
		}
		c.gateways = append(c.gateways, u)
	}
	for _, p := range pids {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--gateway-pid %q: not a process ID", p)
		}
		c.gatewayPIDs = append(c.gatewayPIDs, n)
	}
	if c.jobPrefix == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.jobPrefix = "bench-" + hex.EncodeToString(b) + "-"
	}
	return c, c.validate()
}

func normalizeURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", errors.New("want http://host:port")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func (c *config) validate() error {
	switch {
	case c.clients < 1:
		return errors.New("--clients must be at least 1")
	case c.jobs < 1:
		return errors.New("--jobs must be at least 1")
	case c.rate < 0:
		return errors.New("--rate must not be negative")
	case c.duration < 0 || c.warmup < 0 || c.settle < 0 || c.drain < 0:
		return errors.New("durations must not be negative")
	case c.payload < 0:
		return errors.New("--payload must not be negative")
	case c.resumeFromMiddle == 1 || c.resumeFromMiddle < 0:
		return errors.New("--resume-from-middle needs at least 2 events (or 0: off)")
	case c.connectRate < 0:
		return errors.New("--connect-rate must not be negative")
	case c.publishers < 1:
		return errors.New("--publishers must be at least 1")
	case c.heartbeat <= 0:
		return errors.New("--heartbeat must be positive")
	case c.connectTimeout <= 0:
		return errors.New("--connect-timeout must be positive")
	case len(c.gateways) > 1 && len(c.gatewayPIDs) > 0 && len(c.gatewayPIDs) != len(c.gateways):
		return fmt.Errorf("--gateway-pid names %d processes for %d gateways", len(c.gatewayPIDs), len(c.gateways))
	case !protocol.ValidJobID(c.jobPrefix + strconv.Itoa(c.jobs)):
		return fmt.Errorf("--job-prefix %q does not make valid job IDs", c.jobPrefix)
	}
	if c.floor && (len(c.gatewayPIDs) > 0) {
		return errors.New("--gateway-pid does not apply to ssebench floor")
	}
	return nil
}

// loadWindow reports whether the run publishes during a measured window.
func (c *config) loadWindow() bool { return !c.idle && c.rate > 0 && c.duration > 0 }

// gatewayOf is the index of client i's gateway.
func (c *config) gatewayOf(i int) int {
	if c.spreadJobs {
		return (i%c.jobs + i/c.jobs) % len(c.gateways)
	}
	return i % len(c.gateways)
}

// jobName returns the ID of job j.
func (c *config) jobName(j int) string { return c.jobPrefix + strconv.Itoa(j) }
