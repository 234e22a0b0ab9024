package protocol_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/test/redistest"
)

// evalProgress runs the script as a worker in another language would, with
// the optional idempotency key (KEYS[4]), window and fingerprint.
func evalProgress(t *testing.T, rdb *redis.Client, job string, step int, idemKey, fingerprint string) (string, error) {
	t.Helper()
	data := mustJSON(t, event.NewProgress(job, step, 8, "step "+strconv.Itoa(step), time.Now()))
	return rdb.Eval(context.Background(), protocol.PublishSource(),
		[]string{keys.Events(job), keys.State(job), keys.Live(job), keys.Idempotency(job, idemKey)},
		"1", "publish", "progress", data, "", "", step, 8, 1000, 60000, 60000, "PUBLISH", 60000, fingerprint,
	).Text()
}

// TestIdempotentPublish: a retry with the same key within the window gets
// the first call's ID and writes nothing; the same key with other arguments
// is refused; another key publishes.
func TestIdempotentPublish(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		register(t, rdb, "idem")
		first, err := evalProgress(t, rdb, "idem", 1, "k1", "fp-a")
		if err != nil {
			t.Fatal(err)
		}
		again, err := evalProgress(t, rdb, "idem", 1, "k1", "fp-a")
		if err != nil || again != first {
			t.Fatalf("retry = %q, %v; want the first ID %q", again, err, first)
		}
		if n := rdb.XLen(ctx, keys.Events("idem")).Val(); n != 2 {
			t.Errorf("stream holds %d entries after register and a retried publish, want 2", n)
		}
		if _, err := evalProgress(t, rdb, "idem", 2, "k1", "fp-b"); err == nil || !errors.Is(protocol.ScriptError(err), protocol.ErrIdempotencyKeyReused) {
			t.Errorf("the key reused for another event: %v, want ErrIdempotencyKeyReused", err)
		}
		if _, err := evalProgress(t, rdb, "idem", 2, "k2", "fp-b"); err != nil {
			t.Fatal(err)
		}
		if n := rdb.XLen(ctx, keys.Events("idem")).Val(); n != 3 {
			t.Errorf("stream holds %d entries, want 3", n)
		}
		if ttl := rdb.PTTL(ctx, keys.Idempotency("idem", "k1")).Val(); ttl <= 0 || ttl > time.Minute {
			t.Errorf("the key's record expires in %v, want within the 60 s window", ttl)
		}
	})
}

// TestIdempotentRetryAfterTerminal: a retried complete is answered with its
// ID, not refused as finished.
func TestIdempotentRetryAfterTerminal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
		ctx := context.Background()
		register(t, rdb, "idem-done")
		a := protocol.PublishArgs{
			Op: protocol.OpPublish, Type: event.TypeComplete,
			Data:           mustJSON(t, event.NewCompleteRecord("idem-done", "r-1", false, time.Now())),
			IdempotencyKey: "complete", Fingerprint: "fp",
		}
		first, err := protocol.Publish(ctx, rdb, keys, "idem-done", a)
		if err != nil {
			t.Fatal(err)
		}
		again, err := protocol.Publish(ctx, rdb, keys, "idem-done", a)
		if err != nil || again != first {
			t.Fatalf("retried complete = %q, %v; want %q", again, err, first)
		}
		a.IdempotencyKey = ""
		if _, err := protocol.Publish(ctx, rdb, keys, "idem-done", a); !errors.Is(err, protocol.ErrJobFinished) {
			t.Errorf("complete again without the key: %v, want ErrJobFinished", err)
		}
	})
}
