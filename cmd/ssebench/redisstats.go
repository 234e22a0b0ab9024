package main

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// cmdStat is one line of INFO commandstats.
type cmdStat struct {
	Calls float64
	Usec  float64
}

// redisSnap is one reading of a Redis server's command counters and CPU.
type redisSnap struct {
	Cmds map[string]cmdStat
	CPU  float64 // used_cpu_user + used_cpu_sys, seconds
	OK   bool
	// Shards is each Cluster master's own reading, by address; Cmds and
	// CPU are their sums.
	Shards map[string]redisSnap
}

// snapRedis reads INFO commandstats and INFO cpu, of every master on a
// Cluster. No client, or a server that has neither (miniredis), gives a
// snapshot with OK false.
func snapRedis(ctx context.Context, rdb redis.UniversalClient) redisSnap {
	if rdb == nil {
		return redisSnap{}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return snapServer(ctx, rdb)
	}
	var mu sync.Mutex
	sum := redisSnap{Cmds: map[string]cmdStat{}, Shards: map[string]redisSnap{}, OK: true}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		s := snapServer(ctx, c)
		mu.Lock()
		defer mu.Unlock()
		sum.Shards[c.Options().Addr] = s
		sum.OK = sum.OK && s.OK
		sum.CPU += s.CPU
		for name, v := range s.Cmds {
			t := sum.Cmds[name]
			t.Calls += v.Calls
			t.Usec += v.Usec
			sum.Cmds[name] = t
		}
		return nil
	})
	if err != nil {
		return redisSnap{}
	}
	return sum
}

func snapServer(ctx context.Context, rdb redis.UniversalClient) redisSnap {
	stats, err := rdb.Do(ctx, "INFO", "commandstats").Text()
	if err != nil {
		return redisSnap{}
	}
	cpu, err := rdb.Do(ctx, "INFO", "cpu").Text()
	if err != nil {
		return redisSnap{}
	}
	s := parseRedisInfo(stats + "\n" + cpu)
	s.OK = len(s.Cmds) > 0
	return s
}

// parseRedisInfo reads "cmdstat_<name>:calls=N,usec=N,..." lines and the
// used_cpu_user / used_cpu_sys lines of an INFO reply.
func parseRedisInfo(info string) redisSnap {
	s := redisSnap{Cmds: map[string]cmdStat{}}
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if name, ok := strings.CutPrefix(key, "cmdstat_"); ok {
			var c cmdStat
			for kv := range strings.SplitSeq(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					continue
				}
				switch k {
				case "calls":
					c.Calls = f
				case "usec":
					c.Usec = f
				}
			}
			s.Cmds[name] = c
			continue
		}
		if key == "used_cpu_user" || key == "used_cpu_sys" {
			if f, err := strconv.ParseFloat(val, 64); err == nil {
				s.CPU += f
			}
		}
	}
	return s
}

// CmdDelta is the work Redis did for one command over a window.
type CmdDelta struct {
	Calls float64 `json:"calls"`
	Usec  float64 `json:"usec"`
	// PerEvent is calls per event published in the window (load window
	// only).
	PerEvent float64 `json:"per_event,omitempty"`
}

// delta returns the commands whose call count grew between a and b.
func redisDelta(a, b redisSnap, events float64) map[string]CmdDelta {
	out := map[string]CmdDelta{}
	if !a.OK || !b.OK {
		return out
	}
	for name, cb := range b.Cmds {
		ca := a.Cmds[name]
		d := CmdDelta{Calls: cb.Calls - ca.Calls, Usec: cb.Usec - ca.Usec}
		if d.Calls <= 0 || name == "info" { // INFO is ssebench's own reading
			continue
		}
		if events > 0 {
			d.PerEvent = d.Calls / events
		}
		out[name] = d
	}
	return out
}

// shardDeltas is each Cluster master's work in the connect phase and in
// the measured window, by address; nil on a single server. A master that
// is missing from either reading of a phase (the cluster changed) has no
// figures for that phase. events is every event published in the window:
// a shard's calls per event are its share of the total.
func shardDeltas(sm *samples, events float64) map[string]*ShardResult {
	var out map[string]*ShardResult
	get := func(addr string) *ShardResult {
		if out == nil {
			out = map[string]*ShardResult{}
		}
		if out[addr] == nil {
			out[addr] = &ShardResult{}
		}
		return out[addr]
	}
	for addr, b := range sm.redisConnected.Shards {
		if a, ok := sm.redisEmpty.Shards[addr]; ok && a.OK && b.OK {
			sh := get(addr)
			sh.ConnectCPUS = b.CPU - a.CPU
			sh.Connect = redisDelta(a, b, 0)
		}
	}
	if !sm.redisLoad0.OK || !sm.redisLoad1.OK {
		return out
	}
	for addr, b := range sm.redisLoad1.Shards {
		if a, ok := sm.redisLoad0.Shards[addr]; ok && a.OK && b.OK {
			sh := get(addr)
			sh.LoadCPUS = b.CPU - a.CPU
			sh.Load = redisDelta(a, b, events)
		}
	}
	return out
}

func sortedShards(m map[string]*ShardResult) []string {
	addrs := make([]string, 0, len(m))
	for a := range m {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	return addrs
}

// csvRedisCommands are the commands that get CSV columns (calls per event
// in the load window), so that rows of different runs line up.
var csvRedisCommands = []string{
	"evalsha", "eval", "xadd", "hset", "hget", "hexists", "hmget", "publish", "pexpire", "xrange",
	"subscribe", "unsubscribe", "time", "del",
}

func sortedCommands(m map[string]CmdDelta) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]].Calls != m[names[j]].Calls {
			return m[names[i]].Calls > m[names[j]].Calls
		}
		return names[i] < names[j]
	})
	return names
}
