package gateway_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/streamtest"
)

// TestReconnectStormOneJob: a pod's clients of one job come back to this
// instance at once, from two resume points and without one, while the job
// goes on publishing. Their starts share reads of the job, so Redis sees a
// handful of reads, not one or two per client; and every client still gets
// exactly what it misses, in order, once.
//
// Not parallel: 300 streams under -race would starve the canaries of the
// tests that run beside it on a 2-core machine.
func TestReconnectStormOneJob(t *testing.T) {
	e, g := newStormEnv(t)
	ok := must(t)
	ctx := context.Background()
	job := e.pub.Job("storm")
	ok(job.Register(ctx))
	const before, during, clients = 30, 40, 300
	for s := 1; s <= before; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: before + during}))
	}
	early := e.history("storm")
	resumeFrom := []string{early[10].ID, early[20].ID, ""} // "": no Last-Event-ID, a snapshot
	// The publish script reads the state hash too: measure how, so that
	// only the gateway's reads are counted.
	e.redis.Do(t, "CONFIG", "RESETSTAT")
	ok(job.Progress(ctx, publisher.Step{Step: before, Total: before + during}))
	perPublish := e.commandCalls("hmget") + e.commandCalls("xrange")
	e.redis.Do(t, "CONFIG", "RESETSTAT")

	streams := make([]*streamtest.Stream, clients)
	var published sync.WaitGroup
	published.Go(func() {
		for s := before + 1; s <= before+during; s++ {
			if _, err := job.Progress(ctx, publisher.Step{Step: s, Total: before + during}); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	for i := range streams {
		streams[i] = streamtest.Open(t, []string{g.streamURL("storm")}, resumeFrom[i%len(resumeFrom)])
	}
	published.Wait()
	for _, s := range streams {
		s.WaitEvents(t, 1)
	}
	reads := e.commandCalls("hmget") + e.commandCalls("xrange") - during*perPublish
	ok(job.Complete(ctx, "r", nil))

	want := e.history("storm")
	for i, s := range streams {
		if err := s.WaitDone(t); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		got := s.Events()
		from := resumeFrom[i%len(resumeFrom)]
		if from == "" {
			// The snapshot: the status, then the latest progress with the
			// ID it stands at; then exactly what follows that ID.
			if len(got) < 2 || got[0].Event != "status" || got[1].Event != "progress" || got[1].ID == "" {
				t.Fatalf("stream %d does not begin with a snapshot: %+v", i, got[:min(len(got), 2)])
			}
			from, got = got[1].ID, got[2:]
		}
		streamtest.AssertExactlyOnce(t, got, after(t, want, from))
	}
	// Before the reads were shared: an HMGET and an XRANGE per resume,
	// about 500 here.
	if reads > 20 {
		t.Errorf("the storm of %d streams cost Redis %d HMGET and XRANGE, want at most 20", clients, reads)
	}
	if shared := g.metric(t, "ssegate_stream_start_reads_total", "read", "shared"); shared < clients-20 {
		t.Errorf("%v starts shared a read, want at least %d of %d", shared, clients-20, clients)
	}
	t.Logf("%d streams: %d HMGET and XRANGE, %v reads issued", clients, reads, g.metric(t, "ssegate_stream_start_reads_total", "read", "issued"))
}

// newStormEnv is a gateway on a real redis-server, whose INFO
// commandstats counts what a storm costs.
func newStormEnv(t *testing.T) (*env, *gw) {
	t.Helper()
	e := newEnv(t)
	if !e.redis.Real() {
		t.Skip("INFO commandstats needs a real redis-server")
	}
	return e, e.gateway(testConfig())
}

// finishedJob publishes a job of events progress steps and its completion,
// and returns its history.
func (e *env) finishedJob(name string, events int) []redis.XMessage {
	e.t.Helper()
	ok := must(e.t)
	ctx := context.Background()
	job := e.pub.Job(name)
	ok(job.Register(ctx))
	for s := 1; s <= events; s++ {
		ok(job.Progress(ctx, publisher.Step{Step: s, Total: events}))
	}
	ok(job.Complete(ctx, "r", nil))
	return e.history(name)
}

// after returns the entries of history after the one with ID id, failing
// the test if there is none with it.
func after(t *testing.T, history []redis.XMessage, id string) []redis.XMessage {
	t.Helper()
	for i, e := range history {
		if e.ID == id {
			return history[i+1:]
		}
	}
	t.Fatalf("%s is not in the job's stream", id)
	return nil
}

// TestReconnectStormFinishedJob: clients of a finished job that dropped
// before its end come back at once, from three resume points. Their
// replays share reads of the job's history (it changes no more), and each
// still gets exactly what it missed, its end included, once.
func TestReconnectStormFinishedJob(t *testing.T) {
	e, g := newStormEnv(t)
	const clients = 300
	want := e.finishedJob("done", 60)
	resumeFrom := []string{want[10].ID, want[30].ID, want[50].ID}
	e.redis.Do(t, "CONFIG", "RESETSTAT")

	streams := make([]*streamtest.Stream, clients)
	for i := range streams {
		streams[i] = streamtest.Open(t, []string{g.streamURL("done")}, resumeFrom[i%len(resumeFrom)])
	}
	for i, s := range streams {
		if err := s.WaitDone(t); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), after(t, want, resumeFrom[i%len(resumeFrom)]))
	}
	// Before they were shared: an XRANGE per resume, 300 here.
	reads := e.commandCalls("xrange")
	if reads > 10 {
		t.Errorf("the storm of %d resumes cost Redis %d XRANGE, want at most 10", clients, reads)
	}
	t.Logf("%d resumes of a finished job: %d XRANGE", clients, reads)
	if shared := g.metric(t, "ssegate_stream_start_reads_total", "read", "shared"); shared < clients-10 {
		t.Errorf("%v resumes shared a read, want at least %d of %d", shared, clients-10, clients)
	}
}

// A storm that is slow to arrive (a loaded pod, clients that back off)
// still shares one read of a finished job, as long as its resumes keep
// coming within a second of each other: the read is kept while it is
// used, as a running job's is (see start.go), not for a second from when
// it was made. Measured under load, the storm above cost 55 XRANGEs when
// the read expired a second after it was made.
func TestFinishedJobReadKeptWhileUsed(t *testing.T) {
	e, g := newStormEnv(t)
	want := e.finishedJob("done-slow", 10)
	from := want[3].ID
	e.redis.Do(t, "CONFIG", "RESETSTAT")
	one := 0 // what the first resume costs
	for i := range 5 {
		if i > 0 {
			time.Sleep(400 * time.Millisecond)
		}
		s := streamtest.Open(t, []string{g.streamURL("done-slow")}, from)
		if err := s.WaitDone(t); err != nil {
			t.Fatalf("resume %d: %v", i, err)
		}
		streamtest.AssertExactlyOnce(t, s.Events(), after(t, want, from))
		if i == 0 {
			one = e.commandCalls("xrange")
		}
	}
	if reads := e.commandCalls("xrange"); reads != one {
		t.Errorf("5 resumes 400 ms apart cost %d XRANGE, the first alone %d: the others did not share its read", reads, one)
	}
}
