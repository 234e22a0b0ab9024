package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ssegate/ssegate/pkg/event"
)

// Reasons a stream closes: the label of ssegate_connections_closed_total.
const (
	reasonClientGone   = "client_gone"    // the client went away
	reasonFinished     = "finished"       // the job's terminal event was sent
	reasonTimeout      = "timeout"        // the stream reached its timeout
	reasonSlow         = "slow_client"    // the client fell behind its buffer or a write timed out
	reasonShutdown     = "shutdown"       // the instance is shutting down
	reasonResync       = "resync"         // Redis pub/sub reconnected while the stream was starting
	reasonRedis        = "redis_error"    // Redis failed during a replay
	reasonPanic        = "internal_error" // the handler panicked (ssegate_panics_total)
	reasonJobGone      = "job_gone"       // the job's keys vanished from Redis
	reasonTokenExpired = "token_expired"  // the stream's access token reached its exp
)

// metrics are the gateway's Prometheus metrics, registered on one registry.
// Set once in newMetrics; the collectors are safe for concurrent use.
type metrics struct {
	connections     prometheus.Gauge
	opened          prometheus.Counter
	closed          *prometheus.CounterVec
	subscribedJobs  prometheus.Gauge
	eventsSent      [numTypes]prometheus.Counter // by typeIndex
	eventsReplayed  prometheus.Counter
	slowDisconnects prometheus.Counter
	latency         prometheus.Histogram
	redisErrors     *prometheus.CounterVec
	redisReconnects prometheus.Counter
	refusals        *prometheus.CounterVec
	requests        *prometheus.CounterVec
	panics          prometheus.Counter
	watcherFailures prometheus.Counter
	invalidEvents   *prometheus.CounterVec
	liveMismatches  *prometheus.CounterVec
	startReads      *prometheus.CounterVec
	memoryReleases  prometheus.Counter
}

// Answers to stream requests: the label of ssegate_stream_requests_total.
const (
	answerStream     = "stream"      // a 200 event stream with events
	answerNoContent  = "no_content"  // 204: the client has the terminal event
	answerNotFound   = "not_found"   // 404: no such job
	answerBadRequest = "bad_request" // 400
	answerRefused    = "refused"     // transient refusal (see ssegate_refused_streams_total)
	answerGone       = "client_gone" // the client left before an answer
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ssegate_connections", Help: "Open SSE streams on this instance (scale on this).",
		}),
		opened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_connections_opened_total", Help: "SSE streams opened.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_connections_closed_total", Help: "SSE streams closed, by reason.",
		}, []string{"reason"}),
		subscribedJobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ssegate_subscribed_jobs", Help: "Jobs with a live Redis subscription on this instance.",
		}),
		eventsReplayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_events_replayed_total", Help: "Events sent from the Redis stream to resuming clients.",
		}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_slow_client_disconnects_total", Help: "Clients disconnected for falling behind.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ssegate_delivery_latency_seconds",
			Help:    "Time from an event's publish (its stream ID, Redis clock) to its write to a client, live events only.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_redis_errors_total", Help: "Failed Redis operations, by operation.",
		}, []string{"op"}),
		redisReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_redis_reconnects_total", Help: "Pub/sub connections re-established after a failure.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_refused_streams_total", Help: "Streams refused as transient, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_stream_requests_total", Help: "Stream requests, by answer.",
		}, []string{"answer"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_panics_total", Help: "Handler panics recovered into a 500.",
		}),
		invalidEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_invalid_events_total", Help: "Stored or live events that are not of the event model, dropped before any client, by reason.",
		}, []string{"reason"}),
		liveMismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_live_mismatches_total", Help: "Live messages dropped because their ID cannot be in the job's stream (the stream is re-read), by kind.",
		}, []string{"kind"}),
		memoryReleases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_memory_releases_total",
			Help: "Times the free heap a burst of connects left was returned to the OS at once (see --memory-release-interval).",
		}),
		startReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ssegate_stream_start_reads_total",
			Help: "Starts of running jobs' streams by how their state and history were read: issued (a read sent to Redis) or shared (another stream's read).",
		}, []string{"read"}),
		watcherFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ssegate_close_watcher_failures_total", Help: "Failures of the epoll close watcher; its connections fall back to reader goroutines.",
		}),
	}
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ssegate_events_sent_total", Help: "Events written to clients, by type.",
	}, []string{"type"})
	for i, t := range sentTypes {
		m.eventsSent[i] = sent.WithLabelValues(string(t))
	}
	// Every label value exists from the start, so dashboards see zeros.
	for _, r := range []string{reasonClientGone, reasonFinished, reasonTimeout, reasonSlow, reasonShutdown, reasonResync, reasonRedis, reasonPanic, reasonJobGone} {
		m.closed.WithLabelValues(r)
	}
	for _, op := range []string{"state", "replay", "report", "snapshot", "pubsub", "canary", "resync"} {
		m.redisErrors.WithLabelValues(op)
	}
	for _, r := range []string{refuseDraining, refuseFull, refuseJobFull, refuseRedis} {
		m.refusals.WithLabelValues(r)
	}
	for _, r := range []string{event.InvalidType, event.InvalidJSON, event.InvalidJob, event.InvalidShape, event.InvalidTimestamp} {
		m.invalidEvents.WithLabelValues(r)
	}
	m.liveMismatches.WithLabelValues("ahead")
	m.liveMismatches.WithLabelValues("not_in_stream")
	m.startReads.WithLabelValues("issued")
	m.startReads.WithLabelValues("shared")
	for _, a := range []string{answerStream, answerNoContent, answerNotFound, answerBadRequest, answerRefused, answerGone} {
		m.requests.WithLabelValues(a)
	}
	reg.MustRegister(m.connections, m.opened, m.closed, m.subscribedJobs, sent, m.eventsReplayed,
		m.slowDisconnects, m.latency, m.redisErrors, m.redisReconnects, m.refusals, m.requests, m.panics, m.watcherFailures, m.invalidEvents, m.liveMismatches, m.startReads, m.memoryReleases)
	return m
}

// newRegistry returns a registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// sentTypes are the event types counted in ssegate_events_sent_total, in
// the order of typeIndex.
var sentTypes = [...]event.Type{event.TypeStatus, event.TypeProgress, event.TypeError, event.TypeComplete, event.TypeHeartbeat, event.TypeReset}

const numTypes = len(sentTypes)

// sent returns the counter of events of type t. It runs for every
// delivery: a scan of six short strings, no hashing.
func (m *metrics) sent(t event.Type) prometheus.Counter {
	for i, st := range sentTypes {
		if st == t {
			return m.eventsSent[i]
		}
	}
	return m.eventsSent[numTypes-1]
}
