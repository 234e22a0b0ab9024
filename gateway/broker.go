package gateway

import "context"

// A broker carries the live events of jobs from Redis to the hub: it keeps
// one subscription per job that the hub asks for, on connections of its
// own, and tells the hub when a subscription is in place, when it was lost
// and what it delivered. The hub keeps everything else: the clients, where
// each stands, the gap refills.
//
// The Redis implementation is redisBroker (broker_redis.go); unit tests use
// an in-memory one (memBroker, broker_memory_test.go).
//
// Concurrency: subscribe, unsubscribe and healthy are safe for concurrent
// use and never block (the hub calls them with its lock held); the work
// happens in the goroutines of run.
type broker interface {
	// run keeps the broker's connections up until ctx ends. It calls the
	// brokerEvents it was built with from its own goroutines, and returns
	// after the last call.
	run(ctx context.Context)
	// subscribe asks for job's live messages. Once the subscription is in
	// place the broker calls confirmed(job); after a loss, confirmed comes
	// again when it is back. Asking again for a job whose unsubscribe has
	// not gone out yet keeps the subscription and confirms it again.
	subscribe(job string)
	// unsubscribe drops job's subscription. No callback for job follows
	// unless it is subscribed again.
	unsubscribe(job string)
	// healthy reports, from state kept by run, why live messages may not
	// be flowing (a connection down or wedged), or nil.
	healthy() error
}

// brokerEvents are a broker's calls into the hub. They are made from the
// broker's goroutines, never with a lock held that subscribe, unsubscribe or
// healthy take (a psConn's cb, which orders a connection's callbacks, may be
// held), and must not block. For one job they come in order: confirmed, then delivered for each
// live message, then lost when the subscription fails, then confirmed again
// once it is back, and so on. Between lost and the next confirmed nothing is
// delivered: the hub refills that gap from the job's stream.
type brokerEvents struct {
	confirmed func(job string)
	delivered func(job, payload string)
	lost      func(job string)
}
