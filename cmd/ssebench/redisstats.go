package main

import (
	"context"
	"sort"
	"strconv"
	"strings"
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
}

// snapRedis reads INFO commandstats and INFO cpu. No client, or a server
// that has neither (miniredis), gives a snapshot with OK false.
func snapRedis(ctx context.Context, rdb *redis.Client) redisSnap {
	if rdb == nil {
		return redisSnap{}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
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
