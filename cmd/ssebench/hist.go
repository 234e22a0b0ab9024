package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: values below 2^subBits nanoseconds have a bucket each;
// above, every power of two is split into 2^subBits equal buckets, so a
// bucket's midpoint is within 1/2^(subBits+1) (0.4%) of any value in it.
const (
	subBits    = 7
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// A histogram records durations with ±0.4% resolution from 1 ns to hours.
// It is sharded so that thousands of client goroutines can record at once
// without fighting over one cache line: each caller names its shard.
//
// record and the readers are safe for concurrent use.
type histogram struct {
	shards []histShard
}

type histShard struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Int64  // nanoseconds
	_      [64]byte      // keep the next shard's hot fields off this line
}

func newHistogram(shards int) *histogram {
	return &histogram{shards: make([]histShard, max(1, shards))}
}

func bucketOf(v int64) int {
	if v < subBuckets {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v>>e is in [subBuckets, 2*subBuckets)
	return (e+1)*subBuckets + int(uint64(v)>>e) - subBuckets
}

// bucketMid is the midpoint of bucket i, the value reported for it.
func bucketMid(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	e := i/subBuckets - 1
	lo := int64(i%subBuckets+subBuckets) << e
	return lo + (int64(1)<<e)/2
}

// record adds one duration to shard s (any int; it is reduced).
func (h *histogram) record(s int, d time.Duration) {
	sh := &h.shards[uint(s)%uint(len(h.shards))]
	v := int64(d)
	if v < 0 {
		v = 0 // clocks of one machine: only rounding can make this negative
	}
	sh.counts[bucketOf(v)].Add(1)
	sh.n.Add(1)
	sh.sum.Add(uint64(v))
	for {
		m := sh.max.Load()
		if v <= m || sh.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// histSnapshot is a merged copy of a histogram.
type histSnapshot struct {
	counts []uint64
	n      uint64
	sum    uint64
	max    int64
}

func (h *histogram) snapshot() histSnapshot {
	s := histSnapshot{counts: make([]uint64, numBuckets)}
	for i := range h.shards {
		sh := &h.shards[i]
		for b := range sh.counts {
			s.counts[b] += sh.counts[b].Load()
		}
		s.n += sh.n.Load()
		s.sum += sh.sum.Load()
		s.max = max(s.max, sh.max.Load())
	}
	return s
}

// quantile returns the q-quantile (0 < q <= 1): the bucket midpoint of the
// ceil(q·n)-th smallest value, capped at the exact maximum.
func (s histSnapshot) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(q*float64(s.n) + 0.999999)
	rank = min(max(rank, 1), s.n)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketMid(i), s.max))
		}
	}
	return time.Duration(s.max)
}

func (s histSnapshot) mean() time.Duration {
	if s.n == 0 {
		return 0
	}
	return time.Duration(s.sum / s.n)
}
