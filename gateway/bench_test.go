package gateway

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

const benchData = `{"type":"progress","jobId":"bench","step":2,"totalSteps":8,"currentStep":"Aggregating","percentage":25,"estimatedRemainingMs":42000,"timestamp":"2026-11-27T03:40:30.123Z"}`

// BenchmarkDispatch fans one live event out to n clients of a job: the
// frame is built once (one allocation for the event, whatever n is), then
// offered to every client's queue, then each client takes it.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			m := newMetrics(prometheus.NewRegistry())
			enc := &encoder{}
			js := &jobSub{job: "bench"}
			for range n {
				c := newClient(1, false)
				c.known = true
				js.clients = append(js.clients, c)
			}
			// A first round gives every client its queue slice, kept from then on.
			f0, _ := enc.frame("bench", protocol.ID{Ms: 1}, event.TypeProgress, benchData, true)
			js.publish(f0, m)
			for _, c := range js.clients {
				c.reuse(c.take())
			}
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				f, err := enc.frame("bench", protocol.ID{Ms: 1, Seq: seq}, event.TypeProgress, benchData, true)
				if err != nil {
					b.Fatal(err)
				}
				js.publish(f, m)
				for _, c := range js.clients {
					c.reuse(c.take())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// discardSink is a sink that writes nowhere.
type discardSink struct{ flushes int }

func (d *discardSink) Write(p []byte) (int, error)      { return len(p), nil }
func (d *discardSink) Flush() error                     { d.flushes++; return nil }
func (d *discardSink) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkWriterDrain has the writer loop drain a burst of 32 queued events
// into a connection: written back to back, one flush for the burst.
func BenchmarkWriterDrain(b *testing.B) {
	const burst = 32
	m := newMetrics(prometheus.NewRegistry())
	frames := make([]*frame, burst)
	enc := &encoder{}
	sink := &discardSink{}
	w := &writer{out: sink, writeTimeout: time.Minute, metrics: m}
	c := newClient(burst, false)
	for i := range frames {
		frames[i], _ = enc.frame("bench", protocol.ID{Ms: 1, Seq: uint64(i + 1)}, event.TypeProgress, benchData, true)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.last = protocol.ID{} // the same frames again
		for _, f := range frames {
			c.push(f)
		}
		// One drain: write all that is queued, then flush once.
		batch := c.take()
		for _, f := range batch {
			if _, err := w.frame(f, false, false); err != nil {
				b.Fatal(err)
			}
		}
		c.reuse(batch)
		if err := w.flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/burst, "ns/event")
	if sink.flushes != b.N {
		b.Fatalf("%d flushes for %d bursts", sink.flushes, b.N)
	}
}

// BenchmarkReplay turns 1,000 stream entries into frames and writes them,
// as a client resuming from the start of a long job gets them.
func BenchmarkReplay(b *testing.B) {
	entries := make([]redis.XMessage, 1000)
	for i := range entries {
		entries[i] = redis.XMessage{ID: fmt.Sprintf("1764230400000-%d", i), Values: map[string]any{"type": "progress", "data": benchData}}
	}
	s := &Server{enc: &encoder{}, metrics: newMetrics(prometheus.NewRegistry())}
	b.ReportAllocs()
	for b.Loop() {
		w := &writer{out: &discardSink{}, writeTimeout: time.Minute, metrics: s.metrics}
		for _, h := range s.enc.history("bench", entries) {
			if _, err := w.frame(h.f, false, true); err != nil {
				b.Fatal(err)
			}
		}
		if w.sent != len(entries) {
			b.Fatalf("sent %d", w.sent)
		}
	}
}

// BenchmarkReplayFromRedis is BenchmarkReplay with the reads from a real
// redis-server: two pages of 500 entries.
func BenchmarkReplayFromRedis(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	keys := protocol.NewKeys("")
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for range 1001 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: keys.Events("bench"), Values: []string{"type", "progress", "data", benchData}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	first := rdb.XRangeN(ctx, keys.Events("bench"), "-", "+", 1).Val()[0].ID
	from, _ := protocol.ParseID(first)
	st := &store{rdb: rdb, keys: keys, timeout: 5 * time.Second}
	s := &Server{store: st, enc: &encoder{store: st}, metrics: newMetrics(prometheus.NewRegistry())}
	b.ReportAllocs()
	for b.Loop() {
		w := &writer{out: &discardSink{}, writeTimeout: time.Minute, metrics: s.metrics}
		entries, found, err := st.after(ctx, "bench", from)
		if err != nil || !found {
			b.Fatal(err, found)
		}
		w.last = from
		if done, _ := s.replay(ctx, w, "bench", streamQuery{}, s.enc.history("bench", entries), len(entries) == replayPage); done {
			b.Fatal("replay ended early")
		}
		if w.sent != 1000 {
			b.Fatalf("sent %d", w.sent)
		}
	}
}

// BenchmarkIdleStreamState measures what the gateway itself keeps for an
// idle taken-over stream (its client, queue, writer, sink, stream and
// timer), the net.Conn and the kernel's socket aside: live heap per stream
// with 10,000 open. It is measured once per process: the stopped timers of
// a previous round keep their streams reachable for a while, which would
// skew a second measurement.
func BenchmarkIdleStreamState(b *testing.B) {
	idleStateOnce.Do(func() { idleStatePerStream = measureIdleStreams(10000) })
	for b.Loop() {
	}
	b.ReportMetric(idleStatePerStream, "B/stream")
}

var (
	idleStateOnce      sync.Once
	idleStatePerStream float64
)

func measureIdleStreams(n int) float64 {
	m := newMetrics(prometheus.NewRegistry())
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	js := &jobSub{job: "bench"}
	var clock beatClock
	streams := make([]*stream, 0, n)
	for range n {
		// As an admission holds them: one block (streamMem).
		mem := new(streamMem)
		c := &mem.cl
		c.init(DefaultClientBuffer, false)
		js.clients = append(js.clients, c)
		mem.sink.init(nil, true)
		w := &mem.w
		w.out, w.writeTimeout, w.metrics = &mem.sink, time.Minute, m
		st := mem.st.init(w, c, &clock, time.Hour, time.Hour, func(string) {})
		st.start(context.Background())
		streams = append(streams, st)
	}
	for _, st := range streams {
		for st.state.Load() != streamIdle { // the first drain found nothing to do
			runtime.Gosched()
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for _, st := range streams {
		clock.remove(st)
	}
	runtime.KeepAlive(streams)
	runtime.KeepAlive(js)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}
