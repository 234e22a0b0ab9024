package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
)

// memBroker is an in-memory broker for unit tests: subscriptions are
// confirmed by its run goroutine, in the order they were asked for, and the
// test publishes, fails and restores them by hand. With manual set, nothing
// is confirmed until the test calls confirmAll.
//
// Concurrency: safe for concurrent use; callbacks run on run's goroutine.
type memBroker struct {
	ev     brokerEvents
	manual bool

	mu      sync.Mutex // guards the fields below
	wanted  map[string]bool
	live    map[string]bool
	subs    map[string]int // subscribe calls per job
	unsubs  map[string]int // unsubscribe calls per job
	ops     []func()
	down    error
	wake    chan struct{}
	stopped bool
}

var _ broker = (*memBroker)(nil)

func newMemBroker(ev brokerEvents) *memBroker {
	return &memBroker{
		ev: ev, wanted: map[string]bool{}, live: map[string]bool{},
		subs: map[string]int{}, unsubs: map[string]int{}, wake: make(chan struct{}, 1),
	}
}

// queueLocked runs op on run's goroutine, after every op queued before.
func (b *memBroker) queueLocked(op func()) {
	b.ops = append(b.ops, op)
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *memBroker) run(ctx context.Context) {
	for {
		b.mu.Lock()
		ops := b.ops
		b.ops = nil
		b.mu.Unlock()
		for _, op := range ops {
			op()
		}
		select {
		case <-ctx.Done():
			b.mu.Lock()
			b.stopped = true
			b.mu.Unlock()
			return
		case <-b.wake:
		}
	}
}

func (b *memBroker) subscribe(job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[job]++
	b.wanted[job] = true
	if !b.manual && b.down == nil {
		b.queueLocked(func() { b.confirm(job) })
	}
}

func (b *memBroker) unsubscribe(job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsubs[job]++
	delete(b.wanted, job)
	delete(b.live, job)
}

func (b *memBroker) healthy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.down
}

// confirm runs on run's goroutine.
func (b *memBroker) confirm(job string) {
	b.mu.Lock()
	ok := b.wanted[job]
	if ok {
		b.live[job] = true
	}
	b.mu.Unlock()
	if ok {
		b.ev.confirmed(job)
	}
}

// confirmAll confirms every wanted subscription that is not live.
func (b *memBroker) confirmAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = nil
	for job := range b.wanted {
		if !b.live[job] {
			b.queueLocked(func() { b.confirm(job) })
		}
	}
}

// fail loses every live subscription, as a failed connection does.
func (b *memBroker) fail() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down = fmt.Errorf("memBroker: down")
	for job := range b.live {
		delete(b.live, job)
		b.queueLocked(func() { b.ev.lost(job) })
	}
}

// publish delivers a live message of job if it is subscribed.
func (b *memBroker) publish(job string, id protocol.ID, typ event.Type, data string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.live[job] {
		return
	}
	payload := protocol.EncodeLive(id, typ, data)
	b.queueLocked(func() {
		b.mu.Lock()
		live := b.live[job]
		b.mu.Unlock()
		if live {
			b.ev.delivered(job, payload)
		}
	})
}

func (b *memBroker) calls(job string) (subscribes, unsubscribes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.subs[job], b.unsubs[job]
}

// memHistory is an in-memory history of jobs' streams. While gate is set,
// every read waits for it to close; inFlight counts the reads waiting.
type memHistory struct {
	mu       sync.Mutex // guards the fields below
	entries  map[string][]redis.XMessage
	gate     chan struct{}
	inFlight int
	maxIn    int // most reads in flight at once
	reads    int
}

var _ history = (*memHistory)(nil)

func newMemHistory() *memHistory { return &memHistory{entries: map[string][]redis.XMessage{}} }

// add appends an event with ID ms-0 and returns the ID.
func (m *memHistory) add(job string, ms uint64, typ event.Type, data string) protocol.ID {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := protocol.ID{Ms: ms}
	m.entries[job] = append(m.entries[job], redis.XMessage{ID: id.String(), Values: map[string]any{"type": string(typ), "data": data}})
	return id
}

func (m *memHistory) hold() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gate = make(chan struct{})
}

func (m *memHistory) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.gate)
	m.gate = nil
}

func (m *memHistory) wait(ctx context.Context) error {
	m.mu.Lock()
	gate := m.gate
	m.reads++
	m.inFlight++
	m.maxIn = max(m.maxIn, m.inFlight)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inFlight--
		m.mu.Unlock()
	}()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *memHistory) after(ctx context.Context, job string, id protocol.ID) ([]redis.XMessage, bool, error) {
	if err := m.wait(ctx); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	found := id.IsZero()
	var out []redis.XMessage
	for _, e := range m.entries[job] {
		eid, _ := protocol.ParseID(e.ID)
		switch {
		case eid == id:
			found = true
		case id.Less(eid) && len(out) < replayPage:
			out = append(out, e)
		}
	}
	return out, found, nil
}

// start reads like store.start, with a state made up from the stream: the
// job is processing, at its newest entry (nil without entries).
func (m *memHistory) start(ctx context.Context, job string, resume bool, from protocol.ID) (startRead, error) {
	if err := m.wait(ctx); err != nil {
		return startRead{}, err
	}
	m.mu.Lock()
	entries := m.entries[job]
	var r startRead
	if len(entries) > 0 {
		last, _ := protocol.ParseID(entries[len(entries)-1].ID)
		r.st = &jobState{status: event.StatusProcessing, lastID: last}
	}
	var read []redis.XMessage
	for _, e := range entries {
		if eid, _ := protocol.ParseID(e.ID); !eid.Less(from) && len(read) <= replayPage {
			read = append(read, e)
		}
	}
	m.mu.Unlock()
	if resume {
		r.entries, r.found, r.more = cutAfter(read, from)
	}
	return r, nil
}

func (m *memHistory) check(ctx context.Context, jobs []string) ([]jobCheck, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]jobCheck, len(jobs))
	for i, job := range jobs {
		var entries []redis.XMessage
		entries, out[i].exists = m.entries[job]
		if len(entries) > 0 {
			out[i].tip, _ = protocol.ParseID(entries[len(entries)-1].ID)
		}
	}
	return out, nil
}

func (m *memHistory) page(ctx context.Context, job string, id protocol.ID, n int64) ([]redis.XMessage, error) {
	if err := m.wait(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []redis.XMessage
	for _, e := range m.entries[job] {
		if eid, _ := protocol.ParseID(e.ID); id.Less(eid) && int64(len(out)) < n {
			out = append(out, e)
		}
	}
	return out, nil
}
