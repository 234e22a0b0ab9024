// Package gateway is the ssegate HTTP gateway: it streams a job's events to
// browsers over Server-Sent Events, replays what a resuming client missed
// from the job's Redis stream, and serves a JSON snapshot for polling
// clients, health, readiness and Prometheus metrics.
//
// A Server owns one Hub: the registry of this instance's streams. The hub
// keeps one Redis subscription per job, however many local clients watch
// it, on a few shared pub/sub connections; each event is encoded once and
// the same bytes are queued to every client of the job. Queues are bounded
// and never waited on: a client that falls behind is disconnected and
// resumes from the stream with Last-Event-ID.
//
// Ordering and gap rules:
//   - a stream attaches to its job's live subscription (confirmed by Redis)
//     before it reads the job's state or history, and passes on only live
//     events newer than what it has written;
//   - when a pub/sub connection fails, a new one subscribes its jobs again
//     and each job reads its stream after the oldest point its clients stand
//     at before live events flow again;
//   - on shutdown, readiness fails, new streams are refused as transient,
//     and open streams are closed in waves with a jittered retry hint.
//
// Streams: an HTTP/1.x stream is taken over from net/http after its headers
// (conn.go) and holds no goroutine while it waits: the hub's dispatch, a
// kick or its timer wakes a short-lived drain that writes what is queued
// (stream.go); on Linux one epoll watcher notices closed connections
// (closewatch_linux.go). HTTP/2 streams stay with net/http.
//
// Concurrency: Server and Hub methods are safe for concurrent use. Every
// goroutine the package starts is owned by Serve and has ended when Serve
// returns. There is no package-level state: tests run many servers at once.
package gateway
