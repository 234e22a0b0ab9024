package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// subscribeBatch is the most channels sent in one SUBSCRIBE or UNSUBSCRIBE.
const subscribeBatch = 512

// A shard is one Redis pub/sub connection and the jobs whose subscriptions
// ride on it. Its run loop is the only writer of SUBSCRIBE and UNSUBSCRIBE
// commands, and each job has at most one of them in flight, so every
// confirmation matches exactly one expected state change. Each connection is
// used once: when it fails it is closed, every job on it is marked for a
// refill, and a new connection subscribes them again.
//
// This is the seam for Redis Cluster sharded pub/sub: the commands and the
// connection a job rides on are chosen here and nowhere else.
type shard struct {
	hub    *Hub
	index  int
	canary string

	mu    sync.RWMutex // guards jobs, dirty and every jobSub's refs, state, ready and resync
	jobs  map[string]*jobSub
	dirty map[*jobSub]struct{}
	wake  chan struct{} // holds a token while dirty may be non-empty

	connected     atomic.Bool
	everConnected atomic.Bool
	lastCanary    atomic.Int64 // UnixNano of the last proof of delivery
}

func newShard(h *Hub, i int, instance string) *shard {
	return &shard{
		hub: h, index: i, canary: h.keys.Canary(instance + ":" + strconv.Itoa(i)),
		jobs: map[string]*jobSub{}, dirty: map[*jobSub]struct{}{}, wake: make(chan struct{}, 1),
	}
}

// markDirtyLocked queues js for the run loop to reconcile. s.mu is held.
func (s *shard) markDirtyLocked(js *jobSub) {
	s.dirty[js] = struct{}{}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// healthy reports why the shard cannot deliver, or nil.
func (s *shard) healthy() error {
	if !s.connected.Load() {
		return fmt.Errorf("pub/sub connection %d is down", s.index)
	}
	if age := time.Since(time.Unix(0, s.lastCanary.Load())); age > 3*s.hub.canaryInterval {
		return fmt.Errorf("pub/sub connection %d delivered no canary for %v", s.index, age.Round(time.Millisecond))
	}
	return nil
}

// run keeps a pub/sub connection up until ctx ends.
func (s *shard) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		err := s.serve(ctx, s.hub.rdb.Subscribe(ctx))
		s.connected.Store(false)
		s.lost()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errServed) {
			backoff = 50 * time.Millisecond // it worked for a while: retry at once
		}
		s.hub.metrics.redisErrors.WithLabelValues("pubsub").Inc()
		s.hub.log.Warn("pub/sub connection lost; reconnecting", "conn", s.index, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// errServed wraps the error that ended a connection that had been working.
var errServed = errors.New("connection was up")

// serve uses one connection until it fails or ctx ends; it always closes it.
func (s *shard) serve(ctx context.Context, ps *redis.PubSub) error {
	cctx, cancel := context.WithTimeout(ctx, s.hub.redisTimeout)
	err := ps.Subscribe(cctx, s.canary)
	cancel()
	if err != nil {
		_ = ps.Close()
		return fmt.Errorf("subscribe: %w", err)
	}
	dead := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		dead <- s.read(ctx, ps)
	}()
	defer func() {
		_ = ps.Close()
		<-done
	}()
	if err := s.reconcile(ctx, ps); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-dead:
			if s.connected.Load() {
				return fmt.Errorf("%w: %w", errServed, err)
			}
			return err
		case <-s.wake:
			if err := s.reconcile(ctx, ps); err != nil {
				return err
			}
		}
	}
}

// reconcile sends the SUBSCRIBE and UNSUBSCRIBE commands that bring the
// connection in line with the jobs' reference counts.
func (s *shard) reconcile(ctx context.Context, ps *redis.PubSub) error {
	var sub, unsub []string
	s.mu.Lock()
	for js := range s.dirty {
		if s.jobs[js.channel] != js {
			continue // removed since it was marked
		}
		switch {
		case js.refs > 0 && js.state == stateIdle:
			js.state = stateSubscribing
			sub = append(sub, js.channel)
		case js.refs == 0 && js.state == stateLive:
			js.state = stateUnsubscribing
			js.ready = make(chan struct{}) // a client joining now waits for the resubscribe
			unsub = append(unsub, js.channel)
			s.hub.metrics.subscribedJobs.Dec()
		case js.refs == 0 && js.state == stateIdle:
			delete(s.jobs, js.channel)
		}
	}
	clear(s.dirty)
	s.mu.Unlock()

	for len(sub) > 0 || len(unsub) > 0 {
		n := min(len(sub), subscribeBatch)
		m := min(len(unsub), subscribeBatch)
		cctx, cancel := context.WithTimeout(ctx, s.hub.redisTimeout)
		var err error
		if n > 0 {
			err = ps.Subscribe(cctx, sub[:n]...)
		}
		if err == nil && m > 0 {
			err = ps.Unsubscribe(cctx, unsub[:m]...)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		sub, unsub = sub[n:], unsub[m:]
	}
	return nil
}

// read receives from the connection until it fails. A connection that
// carries nothing, not even the canary, for three intervals is wedged.
func (s *shard) read(ctx context.Context, ps *redis.PubSub) error {
	timeout := 3 * s.hub.canaryInterval
	for {
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("nothing received for %v, not even the canary: %w", timeout, err)
			}
			return err
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.deliver(m)
		case *redis.Subscription:
			if err := s.confirmed(m); err != nil {
				return err
			}
		}
	}
}

func (s *shard) deliver(m *redis.Message) {
	if m.Channel == s.canary {
		s.lastCanary.Store(time.Now().UnixNano())
		return
	}
	s.mu.RLock()
	js := s.jobs[m.Channel]
	s.mu.RUnlock()
	if js == nil {
		return // unsubscribed meanwhile
	}
	lm, err := protocol.DecodeLive(m.Payload)
	if err != nil {
		s.hub.log.Warn("ignoring a live message that is not protocol v1", "channel", m.Channel, "err", err)
		return
	}
	f, err := s.hub.enc.frame(js.job, lm.ID, lm.Type, lm.Data, true)
	if err != nil {
		s.hub.log.Warn("ignoring an unreadable live event", "job", js.job, "err", err)
		return
	}
	js.publish(f, s.hub.metrics)
}

// confirmed applies a subscribe or unsubscribe confirmation. One that no job
// expects means the connection is not in the state we think: it is dropped.
func (s *shard) confirmed(m *redis.Subscription) error {
	if m.Channel == s.canary {
		if m.Kind == "subscribe" {
			// Subscribed, but not yet proven to deliver: only a canary
			// message counts as that, so ask for one now.
			s.connected.Store(true)
			if s.everConnected.Swap(true) {
				s.hub.metrics.redisReconnects.Inc()
			}
			select {
			case s.hub.canaryNow <- struct{}{}:
			default:
			}
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[m.Channel]
	switch m.Kind {
	case "subscribe":
		if js == nil || js.state != stateSubscribing {
			return fmt.Errorf("unexpected subscribe confirmation for %q", m.Channel)
		}
		js.state = stateLive
		close(js.ready)
		s.hub.metrics.subscribedJobs.Inc()
		if js.refs == 0 {
			s.markDirtyLocked(js)
		}
		if js.resync {
			js.resync = false
			js.mu.Lock()
			js.resyncing = true
			js.mu.Unlock()
			s.hub.startResync(js)
		}
	case "unsubscribe":
		if js == nil || js.state != stateUnsubscribing {
			return fmt.Errorf("unexpected unsubscribe confirmation for %q", m.Channel)
		}
		js.state = stateIdle
		if js.refs == 0 {
			delete(s.jobs, m.Channel)
		} else {
			s.markDirtyLocked(js) // clients came back meanwhile: subscribe again
		}
	}
	return nil
}

// lost marks every job of a failed connection for a new subscription. Jobs
// whose clients were live are refilled from the stream once the new
// subscription is confirmed; clients that join meanwhile wait for it.
func (s *shard) lost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, js := range s.jobs {
		if js.state == stateLive {
			s.hub.metrics.subscribedJobs.Dec()
			js.resync = true
			js.ready = make(chan struct{})
		}
		js.state = stateIdle
		if js.refs == 0 {
			delete(s.jobs, ch)
			delete(s.dirty, js)
			continue
		}
		s.dirty[js] = struct{}{}
	}
}
