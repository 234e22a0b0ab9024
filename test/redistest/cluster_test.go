package redistest

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSlotOf(t *testing.T) {
	// Known slots, from CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"":               0,
		"foo":            12182,
		"bar":            5061,
		"{user1000}.a":   SlotOf("user1000"),
		"a{}b":           SlotOf("a{}b"),
		"123456789":      12739, // CRC16/XMODEM check value 0x31C3
		"{foo}bar":       12182,
		"x{foo}{bar}":    12182,
		"stream:{t1}:ev": SlotOf("t1"),
	} {
		if got := SlotOf(key); got != want {
			t.Errorf("SlotOf(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestClusterServesAllMasters(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := StartCluster(t)
	t.Logf("cluster of 3 masters up and agreed in %v", time.Since(start))

	masters := c.Masters()
	if len(masters) != 3 {
		t.Fatalf("masters = %d, want 3", len(masters))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := c.Client(t)
	seen := map[string]bool{}
	for _, m := range masters {
		if m.ID == "" || len(m.Slots) == 0 {
			t.Fatalf("master %+v has no ID or no slots", m)
		}
		key := KeyOn("k", m)
		if got := c.NodeForSlot(SlotOf(key)); got == nil || got.ID != m.ID {
			t.Fatalf("NodeForSlot(%d) = %+v, want %s", SlotOf(key), got, m.ID)
		}
		if got := c.Do(t, m, "CLUSTER", "KEYSLOT", key).(int64); int(got) != SlotOf(key) {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, SlotOf = %d", key, got, SlotOf(key))
		}
		if err := cc.Set(ctx, key, m.ID, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		// The key is on m itself, not elsewhere.
		if got := c.Do(t, m, "GET", key); got != m.ID {
			t.Fatalf("GET %s on its master = %v", key, got)
		}
		seen[m.Addr] = true
	}
	if len(seen) != 3 {
		t.Fatalf("wrote to %d masters, want 3", len(seen))
	}
	if u := c.URL(); u != "redis+cluster://"+c.Addrs()[0]+"?addr="+c.Addrs()[1]+"&addr="+c.Addrs()[2] {
		t.Fatalf("URL = %s", u)
	}
}

func TestClusterWithReplicas(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := StartCluster(t, WithReplicas())
	t.Logf("cluster of 3 masters and 3 replicas up in %v", time.Since(start))
	masters, replicas := c.Masters(), c.Replicas()
	if len(masters) != 3 || len(replicas) != 3 {
		t.Fatalf("masters %d, replicas %d, want 3 and 3", len(masters), len(replicas))
	}
	for i, r := range replicas {
		if r.MasterID != masters[i].ID {
			t.Fatalf("replica %d replicates %s, want %s", i, r.MasterID, masters[i].ID)
		}
	}
}

// TestMigrateSlotUnderWrites moves a slot while writers keep XADDing to
// streams in it: no acknowledged entry may be lost, and afterwards every
// node names the target as the slot's owner. A sharded subscriber of a
// channel in the slot is told sunsubscribe when its node loses the slot.
func TestMigrateSlotUnderWrites(t *testing.T) {
	t.Parallel()
	c := StartCluster(t)
	masters := c.Masters()
	from, to := masters[0], masters[1]
	stream := KeyOn("stream:", from)
	slot := SlotOf(stream)
	tag := stream[len("stream:"):] // "{n}"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc := c.Client(t)

	// Other keys in the slot, so the move takes several MIGRATE batches.
	const others = 1000
	pipe := cc.Pipeline()
	for i := 0; i < others; i++ {
		pipe.Set(ctx, "other:"+tag+":"+strconv.Itoa(i), i, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	sub := cc.SSubscribe(ctx, "chan:"+tag)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the ssubscribe confirmation
		t.Fatal(err)
	}
	subMsgs := make(chan any, 10)
	go func() {
		for {
			v, err := sub.Receive(ctx)
			if err != nil {
				return
			}
			subMsgs <- v
		}
	}()

	// Writers: each XADDs to its own stream of the slot until stopped.
	const writers = 4
	var acked [writers]atomic.Int64
	errs := make(chan error, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := stream + ":" + strconv.Itoa(w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := cc.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"w", w}}).Err(); err != nil {
					errs <- err
					return
				}
				acked[w].Add(1)
			}
		}()
	}
	total := func() (n int64) {
		for w := range acked {
			n += acked[w].Load()
		}
		return n
	}
	waitFor(t, 5*time.Second, "writes before the move", func() error {
		if total() < 200 {
			return errors.New("too few writes yet")
		}
		return nil
	})
	before := total()
	start := time.Now()
	c.MigrateSlot(t, slot, to)
	took := time.Since(start)
	during := total() - before
	time.Sleep(100 * time.Millisecond) // and some writes after
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	t.Logf("moved slot %d (%d keys) in %v while %d XADDs were acknowledged; %d in all",
		slot, others+writers, took, during, total())
	if during == 0 {
		t.Errorf("no XADD was acknowledged during the move")
	}

	for w := range acked {
		key := stream + ":" + strconv.Itoa(w)
		n, err := cc.XLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n != acked[w].Load() {
			t.Errorf("XLEN %s = %d, acknowledged XADDs = %d", key, n, acked[w].Load())
		}
		if got := c.Do(t, to, "XLEN", key).(int64); got != n {
			t.Errorf("XLEN %s on the target = %d, want %d", key, got, n)
		}
	}
	for _, m := range masters {
		keys := c.Do(t, m, "CLUSTER", "COUNTKEYSINSLOT", slot).(int64)
		if want := map[bool]int64{true: others + writers, false: 0}[m.ID == to.ID]; keys != want {
			t.Errorf("%s holds %d keys of slot %d, want %d", m.Addr, keys, slot, want)
		}
		// Every node's own CLUSTER SLOTS names the target.
		for _, sr := range c.Do(t, m, "CLUSTER", "SLOTS").([]any) {
			r := sr.([]any)
			lo, hi := int(r[0].(int64)), int(r[1].(int64))
			if slot >= lo && slot <= hi {
				if id := r[2].([]any)[2].(string); id != to.ID {
					t.Errorf("%s: CLUSTER SLOTS gives slot %d to %s, want %s", m.Addr, slot, id, to.ID)
				}
			}
		}
	}
	if got := c.NodeForSlot(slot); got == nil || got.ID != to.ID {
		t.Errorf("NodeForSlot(%d) = %+v, want %s", slot, got, to.ID)
	}

	// Redis 7.0 ends sharded subscriptions of a slot its node no longer
	// owns with a sunsubscribe push; go-redis hands it to Receive as a
	// *redis.Subscription (Channel() drops it) and does not resubscribe.
	select {
	case v := <-subMsgs:
		s, ok := v.(*redis.Subscription)
		if !ok || s.Kind != "sunsubscribe" || s.Channel != "chan:"+tag {
			t.Errorf("sharded subscriber got %#v, want a sunsubscribe of chan:%s", v, tag)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("sharded subscriber got no sunsubscribe after the slot moved")
	}
}
