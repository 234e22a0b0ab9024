package publisher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/publisher"
	"github.com/ssegate/ssegate/test/redistest"
)

// TestRetriedPublishStoredOnce: a call retried with its idempotency key
// (here after a timestamp has moved on) is stored once and answered with
// the first ID; the key on another event is refused; a bad key is refused
// before Redis.
func TestRetriedPublishStoredOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		p := publisher.New(rdb)
		j := p.Job("idem-job")
		if _, err := j.WithIdempotencyKey("register").Register(ctx); err != nil {
			t.Fatal(err)
		}
		if id, err := j.WithIdempotencyKey("register").Register(ctx); err != nil || id == "" {
			t.Fatalf("retried Register = %q, %v; want its ID, not ErrJobExists", id, err)
		}
		step := j.WithIdempotencyKey("step-1")
		first, err := step.Progress(ctx, publisher.Step{Step: 1, Total: 4, Name: "Loading"})
		if err != nil {
			t.Fatal(err)
		}
		again, err := step.Progress(ctx, publisher.Step{Step: 1, Total: 4, Name: "Loading"})
		if err != nil || again != first {
			t.Fatalf("retry = %q, %v; want %q", again, err, first)
		}
		if _, err := step.Progress(ctx, publisher.Step{Step: 2, Total: 4, Name: "Loading"}); !errors.Is(err, publisher.ErrIdempotencyKeyReused) {
			t.Errorf("the key on another step: %v, want ErrIdempotencyKeyReused", err)
		}
		if n := rdb.XLen(ctx, protocol.NewKeys("").Events("idem-job")).Val(); n != 2 {
			t.Errorf("stream holds %d entries, want 2 (register, step 1)", n)
		}
		if _, err := j.WithIdempotencyKey("bad key").Progress(ctx, publisher.Step{Step: 2, Total: 4}); !errors.Is(err, publisher.ErrInvalidIdempotencyKey) {
			t.Errorf("a key with a space: %v, want ErrInvalidIdempotencyKey", err)
		}
		// Without a key, a retry is a second event, as before.
		if _, err := j.Progress(ctx, publisher.Step{Step: 2, Total: 4}); err != nil {
			t.Fatal(err)
		}
		if _, err := j.Progress(ctx, publisher.Step{Step: 2, Total: 4}); err != nil {
			t.Fatal(err)
		}
		if n := rdb.XLen(ctx, protocol.NewKeys("").Events("idem-job")).Val(); n != 4 {
			t.Errorf("stream holds %d entries, want 4", n)
		}
	})
}
