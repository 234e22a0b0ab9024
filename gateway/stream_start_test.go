package gateway

import (
	"context"
	"testing"
	"time"
)

// TestStreamTimerFiresAtStart: a stream whose timer fires while start is
// still setting it up (a timeout already reached) ends cleanly as a
// timeout. Before a stream was built in its running state, the timer's
// drain could reach the stop function before start had set it: a nil call
// that killed the process, or a data race under -race.
func TestStreamTimerFiresAtStart(t *testing.T) {
	t.Parallel()
	for i := range 500 {
		w, _ := newTestWriter(t)
		c := newClient(4, false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan string, 1)
		newStream(w, c, nil, time.Hour, 0, func(reason string) { done <- reason }).start(ctx)
		select {
		case reason := <-done:
			if reason != reasonTimeout {
				t.Fatalf("stream %d ended as %q, want %q", i, reason, reasonTimeout)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d did not end", i)
		}
		cancel()
	}
}
