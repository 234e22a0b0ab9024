package redistest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSentinelStart(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := StartSentinel(t)
	t.Logf("master, replica and 3 sentinels up and agreed in %v", time.Since(start))
	want := "redis+sentinel://" + strings.Join([]string{
		s.SentinelAddrs()[0], "?addr=", s.SentinelAddrs()[1], "&addr=", s.SentinelAddrs()[2], "&master=mymaster",
	}, "")
	if s.URL() != want {
		t.Fatalf("URL = %s, want %s", s.URL(), want)
	}
	if got := s.MasterAddr(t); got != s.Servers()[0].Addr() {
		t.Fatalf("MasterAddr = %s, want %s", got, s.Servers()[0].Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Client(t).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := s.Servers()[0].Do(t, "GET", "k"); got != "v" {
		t.Fatalf("GET on the master = %v", got)
	}
}

// TestSentinelFailover kills the master: the Sentinels promote the
// replica, and a failover client that keeps writing (retrying through the
// switch) ends up writing to the new master, which has every write
// acknowledged before the kill.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t)
	oldMaster, replica := s.Servers()[0], s.Servers()[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client(t)

	// Writes acknowledged by the replica too (WAIT) must survive the kill.
	for i := 0; i < 100; i++ {
		if err := c.RPush(ctx, "before", i).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}

	// A writer that retries every failed INCR until it succeeds.
	var ok, failed atomic.Int64
	var lastOK atomic.Value // the time of the last acknowledged write
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			err := c.Incr(wctx, "counter").Err()
			wcancel()
			if err != nil {
				failed.Add(1)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			ok.Add(1)
			lastOK.Store(time.Now())
		}
	}()
	waitFor(t, 5*time.Second, "writes before the failover", func() error {
		if ok.Load() < 50 {
			return errors.New("too few writes yet")
		}
		return nil
	})

	newMaster, took := s.Failover(t)
	t.Logf("failover: %s -> %s in %v (SIGKILL to every sentinel naming the new master, which answers ROLE master)",
		oldMaster.Addr(), newMaster, took)
	if newMaster != replica.Addr() {
		t.Fatalf("new master %s, want the replica %s", newMaster, replica.Addr())
	}
	okAtFailover := ok.Load()
	failover := time.Now()
	waitFor(t, 10*time.Second, "the failover client to write again", func() error {
		if ok.Load() < okAtFailover+50 {
			return errors.New("no new writes yet")
		}
		return nil
	})
	t.Logf("failover client writing again %v after the sentinels agreed; %d writes failed and were retried",
		time.Since(failover), failed.Load())
	close(stop)
	wg.Wait()

	if got := s.Master(t); got != replica {
		t.Fatalf("Master() = %s, want %s", got.Addr(), replica.Addr())
	}
	if n := replica.Do(t, "LLEN", "before").(int64); n != 100 {
		t.Fatalf("LLEN before on the new master = %d, want 100", n)
	}
	n, _ := strconv.Atoi(replica.Do(t, "GET", "counter").(string))
	if int64(n) < ok.Load()-okAtFailover {
		t.Fatalf("counter on the new master = %d, but %d INCRs were acknowledged after the failover", n, ok.Load()-okAtFailover)
	}
	if role := replica.Do(t, "ROLE").([]any); role[0] != "master" {
		t.Fatalf("ROLE of the new master = %v", role)
	}
}

func TestSentinelFailoverGraceful(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t)
	replica := s.Servers()[1]
	newMaster, took := s.FailoverGraceful(t)
	t.Logf("SENTINEL FAILOVER: new master %s in %v", newMaster, took)
	if newMaster != replica.Addr() {
		t.Fatalf("new master %s, want the replica %s", newMaster, replica.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Client(t).Set(ctx, "after", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := replica.Do(t, "GET", "after"); got != "1" {
		t.Fatalf("GET after on the new master = %v", got)
	}
}
