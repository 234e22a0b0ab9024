// Package gateway is the ssegate HTTP gateway: it streams a job's events to
// browsers over Server-Sent Events, replays what a resuming client missed
// from the job's Redis stream, and serves a JSON snapshot for polling
// clients, health, readiness and Prometheus metrics.
//
// A Server owns one Hub: the registry of this instance's streams and their
// fan-out (hub.go). The hub asks its broker (broker.go; on Redis pub/sub,
// broker_redis.go) for one subscription per job, however many local clients
// watch it, keeps it for a linger after the last one leaves, and queues each
// event, encoded once (frame.go), to every client of the job (client.go).
// Queues are bounded and never waited on: a client that falls behind is
// disconnected and resumes from the stream with Last-Event-ID.
//
// Ordering and gap rules:
//   - a stream attaches to its job's live subscription (confirmed by the
//     broker) before it reads the job's state or history, and passes on only
//     live events newer than what it has written;
//   - when the broker loses a subscription, the job reads its stream after
//     the oldest point its clients stand at once the subscription is back,
//     before live events flow again (refill.go; one refill per job at a time);
//   - on shutdown, readiness fails, new streams are refused as transient,
//     and open streams are closed in waves with a jittered retry hint.
//
// Requests: the stream route is served with net/http's ResponseWriter
// (stream_handler.go, replay.go, refuse.go), the JSON API by Echo (api.go),
// both behind the same net/http middleware (middleware.go, Server.Use). An
// HTTP/1.x stream is taken over from net/http after its headers (conn.go)
// and holds no goroutine while it waits: the hub's dispatch, a kick or its
// timer wakes a short-lived drain that writes what is queued (stream.go,
// writer.go); on Linux one epoll watcher notices closed connections
// (closewatch_linux.go). HTTP/2 streams stay with net/http.
//
// Concurrency: Server and Hub methods are safe for concurrent use; each type
// says what guards its fields. Every goroutine the package starts is owned
// by Serve and has ended when Serve returns. There is no package-level
// state: tests run many servers at once.
package gateway
