package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a real Redis master, one replica of it and three Sentinels
// monitoring them (quorum 2), on loopback ports, owned by a test. Every
// process is stopped when the test ends.
type Sentinel struct {
	tb        testing.TB
	name      string
	downAfter time.Duration

	data      []*Server // the master and the replica, in start order (roles change on failover)
	sentinels []*Server
	admins    []*redis.SentinelClient // one per sentinel, for the helper's own commands
}

// SentinelOption changes how StartSentinel builds the set-up.
type SentinelOption func(*Sentinel)

// WithMasterName names the monitored master ("mymaster" by default).
func WithMasterName(name string) SentinelOption { return func(s *Sentinel) { s.name = name } }

// WithDownAfter sets down-after-milliseconds: how long the master must be
// unreachable before a Sentinel thinks it down (500 ms by default).
func WithDownAfter(d time.Duration) SentinelOption { return func(s *Sentinel) { s.downAfter = d } }

// StartSentinel starts a master, a replica of it and three Sentinels, and
// waits until every Sentinel knows the master, the replica and the other
// two Sentinels, and is connected to all of them. It skips tb where there
// is no redis-server, unless CI is set, where it fails.
func StartSentinel(tb testing.TB, opts ...SentinelOption) *Sentinel {
	tb.Helper()
	requireBinary(tb)
	s := &Sentinel{tb: tb, name: "mymaster", downAfter: 500 * time.Millisecond}
	for _, o := range opts {
		o(s)
	}
	dataArgs := []string{"--repl-diskless-sync-delay", "0"} // the replica syncs at once, not after 5 s
	master := startServer(tb, tb.TempDir(), "", func() []string { return dataArgs })
	replica := startServer(tb, tb.TempDir(), "", func() []string {
		return append(dataArgs, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	})
	s.data = []*Server{master, replica}
	rc := adminClient(tb, replica.Addr())
	waitFor(tb, 10*time.Second, "the replica to sync", func() error {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err != nil {
			return err
		}
		if st := infoField(info, "master_link_status"); st != "up" {
			return fmt.Errorf("master_link_status:%s", st)
		}
		return nil
	})

	s.sentinels = s.startSentinels(tb, master.port, replica.port)
	for _, sn := range s.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
		tb.Cleanup(func() { _ = c.Close() })
		s.admins = append(s.admins, c)
	}
	s.waitReady(tb, master.Addr(), replica.Addr())
	return s
}

// startSentinels starts three Sentinels. Their config files already name
// the replica and each other (known-replica, known-sentinel with fixed
// myids), so none waits for INFO or hello messages (every 2 s) to learn of
// them. The ports are chosen first for that; if one was taken meanwhile,
// all three start again on new ones.
func (s *Sentinel) startSentinels(tb testing.TB, masterPort, replicaPort int) []*Server {
	tb.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		ports, ids := make([]int, 3), make([]string, 3)
		for i := range ports {
			if ports[i], err = FreePort(); err != nil {
				break
			}
			ids[i] = randomID()
		}
		if err != nil {
			continue
		}
		var started []*Server
		for i := range ports {
			dir := tb.TempDir()
			conf := filepath.Join(dir, "sentinel.conf")
			if err = os.WriteFile(conf, []byte(s.config(i, ids, ports, masterPort, replicaPort)), 0o644); err != nil {
				tb.Fatalf("redistest: %v", err)
			}
			srv := &Server{tb: tb, bin: Binary(), dir: dir, conf: conf, port: ports[i], args: []string{"--sentinel"}}
			if err = srv.start(); err != nil {
				break
			}
			started = append(started, srv)
			// A Sentinel retries a link once per ping period (1 s), so the
			// first ones started would wait that long for the later ones.
			// SENTINEL DEBUG (Redis 7) makes it 100 ms: start-up takes
			// 0.2 s instead of 1.2 s. (It also pings the master every
			// 100 ms instead of every down-after-milliseconds.)
			if err = sentinelDebug(srv.Addr(), "PING-PERIOD", 100); err != nil {
				break
			}
		}
		if err == nil {
			for _, srv := range started {
				tb.Cleanup(srv.Stop)
			}
			return started
		}
		for _, srv := range started {
			srv.Stop()
		}
	}
	tb.Fatalf("redistest: start sentinels: %v", err)
	return nil
}

// config is the config file of sentinel i. Sentinels rewrite it, so it
// lives in the sentinel's own temp dir.
func (s *Sentinel) config(i int, ids []string, ports []int, masterPort, replicaPort int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sentinel myid %s\n", ids[i])
	fmt.Fprintf(&b, "sentinel resolve-hostnames no\n")
	fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d 2\n", s.name, masterPort)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", s.name, s.downAfter.Milliseconds())
	fmt.Fprintf(&b, "sentinel failover-timeout %s 5000\n", s.name)
	fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", s.name)
	fmt.Fprintf(&b, "sentinel known-replica %s 127.0.0.1 %d\n", s.name, replicaPort)
	for j := range ports {
		if j != i {
			fmt.Fprintf(&b, "sentinel known-sentinel %s 127.0.0.1 %d %s\n", s.name, ports[j], ids[j])
		}
	}
	return b.String()
}

// waitReady waits until every Sentinel sees master as an up master with
// replica as its connected replica, and is connected to the two others.
func (s *Sentinel) waitReady(tb testing.TB, master, replica string) {
	tb.Helper()
	ctx := context.Background()
	waitFor(tb, 10*time.Second, "sentinels to know master, replica and each other", func() error {
		for i, c := range s.admins {
			at := s.sentinels[i].Addr()
			m, err := c.Master(ctx, s.name).Result()
			if err != nil {
				return fmt.Errorf("sentinel %s: %v", at, err)
			}
			if addr := m["ip"] + ":" + m["port"]; addr != master || m["flags"] != "master" {
				return fmt.Errorf("sentinel %s: master %s flags %s", at, addr, m["flags"])
			}
			reps, err := c.Replicas(ctx, s.name).Result()
			if err != nil {
				return fmt.Errorf("sentinel %s: %v", at, err)
			}
			if len(reps) != 1 || reps[0]["ip"]+":"+reps[0]["port"] != replica || reps[0]["flags"] != "slave" ||
				reps[0]["master-link-status"] != "ok" {
				return fmt.Errorf("sentinel %s: replicas %v", at, reps)
			}
			others, err := c.Sentinels(ctx, s.name).Result()
			if err != nil {
				return fmt.Errorf("sentinel %s: %v", at, err)
			}
			if len(others) != 2 {
				return fmt.Errorf("sentinel %s knows %d other sentinels", at, len(others))
			}
			for _, o := range others {
				if o["flags"] != "sentinel" {
					return fmt.Errorf("sentinel %s: sentinel %s:%s flags %s", at, o["ip"], o["port"], o["flags"])
				}
			}
		}
		return nil
	})
}

// URL returns redis+sentinel://first?addr=second&addr=third&master=NAME.
func (s *Sentinel) URL() string {
	addrs := s.SentinelAddrs()
	return fmt.Sprintf("redis+sentinel://%s?addr=%s&addr=%s&master=%s", addrs[0], addrs[1], addrs[2], s.name)
}

// MasterName returns the name the Sentinels monitor the master under.
func (s *Sentinel) MasterName() string { return s.name }

// SentinelAddrs returns the addresses of the three Sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// Sentinels returns the Sentinel processes, for Kill, Pause and Resume.
func (s *Sentinel) Sentinels() []*Server { return s.sentinels }

// MasterAddr returns the master's address as the first Sentinel that
// answers gives it.
func (s *Sentinel) MasterAddr(tb testing.TB) string {
	tb.Helper()
	var lastErr error
	for _, c := range s.admins {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addr, err := c.GetMasterAddrByName(ctx, s.name).Result()
		cancel()
		if err == nil && len(addr) == 2 {
			return addr[0] + ":" + addr[1]
		}
		lastErr = err
	}
	tb.Fatalf("redistest: no sentinel gives the master's address: %v", lastErr)
	return ""
}

// Master returns the data server the Sentinels name as the master.
func (s *Sentinel) Master(tb testing.TB) *Server {
	tb.Helper()
	addr := s.MasterAddr(tb)
	for _, d := range s.data {
		if d.Addr() == addr {
			return d
		}
	}
	tb.Fatalf("redistest: the sentinels' master %s is none of the data servers", addr)
	return nil
}

// Servers returns the master and the replica, in start order (so after a
// failover the first is no longer the master).
func (s *Sentinel) Servers() []*Server { return s.data }

// Client returns a new failover client of the master, through the
// Sentinels, closed when the test ends.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: s.name, SentinelAddrs: s.SentinelAddrs(), DialTimeout: time.Second,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Failover kills the current master with SIGKILL, as a crash would, and
// waits (20 s at most) until every Sentinel names another master and that
// one answers ROLE as a master. It returns the new master's address and
// how long that took from the kill.
func (s *Sentinel) Failover(tb testing.TB) (newMaster string, took time.Duration) {
	tb.Helper()
	old := s.Master(tb)
	start := time.Now()
	old.Kill()
	newMaster = s.waitNewMaster(tb, old.Addr())
	return newMaster, time.Since(start)
}

// FailoverGraceful asks a Sentinel for a failover (SENTINEL FAILOVER),
// with the master still up, and waits as Failover does. The Sentinels
// turn the old master into a replica of the new one only some seconds
// later (when they next see it report itself a master), so until then a
// client still connected to it may go on writing there.
func (s *Sentinel) FailoverGraceful(tb testing.TB) (newMaster string, took time.Duration) {
	tb.Helper()
	old := s.MasterAddr(tb)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.admins[0].Failover(ctx, s.name).Err(); err != nil {
		tb.Fatalf("redistest: SENTINEL FAILOVER %s: %v", s.name, err)
	}
	newMaster = s.waitNewMaster(tb, old)
	return newMaster, time.Since(start)
}

// waitNewMaster waits until every live Sentinel names the same master,
// other than old, and it answers ROLE master.
func (s *Sentinel) waitNewMaster(tb testing.TB, old string) string {
	tb.Helper()
	ctx := context.Background()
	var addr string
	waitFor(tb, 20*time.Second, "the sentinels to name a new master", func() error {
		addr = ""
		for i, c := range s.admins {
			if !s.sentinels[i].running() {
				continue
			}
			a, err := c.GetMasterAddrByName(ctx, s.name).Result()
			if err != nil {
				return err
			}
			got := a[0] + ":" + a[1]
			switch {
			case got == old:
				return fmt.Errorf("sentinel %s still names %s", s.sentinels[i].Addr(), old)
			case addr != "" && got != addr:
				return fmt.Errorf("sentinels name %s and %s", addr, got)
			}
			addr = got
		}
		if addr == "" {
			return errors.New("no sentinel runs")
		}
		return roleMaster(ctx, addr)
	})
	return addr
}

// roleMaster returns nil if the server at addr answers ROLE as a master.
func roleMaster(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return fmt.Errorf("ROLE of %s: %v", addr, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%s is a %v", addr, role[0])
	}
	return nil
}

func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// randomID returns 40 random hex digits, a Sentinel's myid.
func randomID() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sentinelDebug runs SENTINEL DEBUG args... on the Sentinel at addr.
func sentinelDebug(addr string, args ...any) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	return c.Do(context.Background(), append([]any{"SENTINEL", "DEBUG"}, args...)...).Err()
}
