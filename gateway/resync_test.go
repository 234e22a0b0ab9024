package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

// When a pub/sub outage outlasts a job's retained history, the refill
// cannot close the gap: a client whose position is gone from the stream is
// sent back through its Last-Event-ID (which answers with a reset and the
// snapshot), while a client whose position is still there gets the refill.
func TestResyncAfterTrimmedHistory(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	cfg := Config{}.withDefaults()
	keys := protocol.NewKeys("")
	st := &store{rdb: rdb, keys: keys, timeout: 5 * time.Second}
	h := newHub(rdb, cfg, st, &encoder{store: st}, newMetrics(prometheus.NewRegistry()), "test")

	job := publisher.New(rdb, publisher.WithMaxLen(10)).Job("trim")
	first, err := job.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 300; i++ {
		if _, err := job.Progress(ctx, publisher.Step{Step: i, Total: 300}); err != nil {
			t.Fatal(err)
		}
	}
	entries := rdb.XRange(ctx, keys.Events("trim"), "-", "+").Val()
	if entries[0].ID == first {
		t.Fatal("the history was not trimmed")
	}
	behind, _ := protocol.ParseID(first)                      // gone from the stream
	within, _ := protocol.ParseID(entries[len(entries)-6].ID) // still there, 5 entries to go

	lost, fine := newClient(64, false), newClient(64, false)
	lost.known, lost.base = true, behind
	fine.known, fine.base = true, within
	js := &jobSub{job: "trim", clients: []*client{lost, fine}, resyncing: true}
	h.resync(js)

	select {
	case <-lost.kicked:
		if lost.kickReason != reasonResync || lost.kickRetry <= 0 {
			t.Errorf("lost client kicked as %q with retry %v", lost.kickReason, lost.kickRetry)
		}
	default:
		t.Error("the client whose position was trimmed was not sent back to resume")
	}
	select {
	case <-fine.kicked:
		t.Errorf("the client whose position is retained was kicked (%s)", fine.kickReason)
	default:
	}
	got := 0
	for _, f := range fine.take() {
		if len(f.ids) > 0 {
			for _, id := range f.ids {
				if within.Less(id) {
					got++
				}
			}
		} else if within.Less(f.id) {
			got++
		}
	}
	if got != 5 {
		t.Errorf("the retained client got %d refilled events, want 5", got)
	}
	if js.resyncing {
		t.Error("the job is still refilling")
	}
}
