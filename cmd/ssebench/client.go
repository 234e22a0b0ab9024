package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/token"
)

// clientState is one client's bookkeeping. Its goroutine owns it while it
// runs; the bench reads it after every client goroutine has ended. It is
// small on purpose: no per-event memory, just the last ID, a count and a
// running hash of the IDs received.
type clientState struct {
	last       protocol.ID // newest counted event; IDs must strictly increase
	accepted   uint64      // counted events (each newer than the one before)
	hash       uint64      // sum of idHash over the counted events
	dups       uint32      // events with the same ID as the one before
	ooo        uint32      // events older than the newest counted one
	resets     uint32      // reset events (history trimmed)
	foreign    uint32      // progress events without a publish stamp or ID
	reconnects uint32      // streams after the first
	connected  bool        // got its first event
	finished   bool        // got its job's terminal event (or a 204)
	failed     bool        // gave up: a permanent HTTP error
}

// newHTTPClient returns the HTTP client every SSE client shares: HTTP/1.1
// only, no compression, and no limit on connections per host.
func newHTTPClient(conns int) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       0,
		DisableCompression:    true,
		ResponseHeaderTimeout: 30 * time.Second,
		Protocols:             &protocols,
		// Requests are a few hundred bytes: a small write buffer saves
		// memory on every connection.
		WriteBufferSize: 1024,
		ReadBufferSize:  4096,
	}
	return &http.Client{Transport: tr}
}

// streamURL is client i's stream URL.
func (b *bench) streamURL(i int) string {
	base := b.cfg.gateways[b.cfg.gatewayOf(i)]
	u := base + "/api/reports/" + b.cfg.jobName(i%b.cfg.jobs) + "/stream?timeout=" + b.cfg.streamTimeout.String()
	if b.tokens != nil {
		u += "&access_token=" + b.tokens[i%b.cfg.jobs]
	}
	return u
}

// mintTokens mints each job's token (jobs: [the job], an hour) with the
// secret in --jwt-secret-env.
func (b *bench) mintTokens() error {
	if b.cfg.jwtSecretEnv == "" {
		return nil
	}
	keys, err := token.Secrets(os.Getenv(b.cfg.jwtSecretEnv))
	if err != nil {
		return fmt.Errorf("--jwt-secret-env %s: %w", b.cfg.jwtSecretEnv, err)
	}
	exp := jwt.NewNumericDate(time.Now().Add(time.Hour))
	b.tokens = make([]string, b.cfg.jobs)
	for j := range b.tokens {
		c := token.Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp}, Jobs: token.Grant{b.cfg.jobName(j)}}
		if b.tokens[j], err = token.Mint(keys[0], c); err != nil {
			return err
		}
	}
	return nil
}

// runClient is one SSE client: it connects, reads events until its job's
// terminal event, and resumes with Last-Event-ID when a stream ends early,
// as a browser would.
func (b *bench) runClient(ctx context.Context, i int) {
	st := &b.st[i]
	u := b.streamURL(i)
	lastID := ""
	if b.mid != nil {
		// Resume from the middle: anything up to it would be out of order.
		st.last = b.mid[i%b.cfg.jobs]
		lastID = st.last.String()
	}
	start := time.Now()
	wait := 100 * time.Millisecond
	resumed := false // the previous stream delivered events and ended early
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !sleepCtx(ctx, jitter(wait)) {
				return
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			b.fail(st, "request: "+err.Error())
			return
		}
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Cache-Control", "no-cache")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := b.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.connectErrors.Add(1)
			b.errs.add("connect: " + shortErr(err))
			wait = min(2*wait, 2*time.Second)
			continue
		}
		switch {
		case resp.StatusCode == http.StatusNoContent:
			// Resumed after the terminal event: nothing more for us.
			resp.Body.Close()
			b.finish(st)
			return
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			b.fail(st, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body))
			return
		case resp.StatusCode != http.StatusOK:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			b.connectErrors.Add(1)
			b.errs.add(fmt.Sprintf("HTTP %d", resp.StatusCode))
			wait = min(2*wait, 2*time.Second)
			continue
		}
		if resumed {
			st.reconnects++
			b.reconnects.Add(1)
		}
		dec := event.NewDecoderSize(resp.Body, 1<<20)
		if lastID != "" {
			dec.SetLastEventID(lastID)
		}
		terminal, events, err := b.readStream(dec, st, i, start)
		resp.Body.Close()
		if terminal {
			b.finish(st)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, io.EOF) {
			b.errs.add("read: " + shortErr(err))
		}
		resumed = events > 0
		if events == 0 {
			// A gateway turns a stream away for a transient reason
			// (connection limit, draining, Redis down) with a 200 that
			// carries only a retry hint.
			b.refused.Add(1)
			b.errs.add("stream closed before its first event: refused as transient (see the gateway's ssegate_refused_streams_total)")
		}
		// The stream ended early (a refusal, a timeout, a slow-client cut,
		// a restart): resume after what we have, after the server's hint.
		lastID = dec.LastEventID()
		wait = dec.Retry()
		if wait <= 0 {
			wait = 100 * time.Millisecond
		}
		wait = min(wait, 5*time.Second)
	}
}

// readStream reads one stream's events. It reports whether the job's
// terminal event arrived, and how many events the stream carried.
func (b *bench) readStream(dec *event.Decoder, st *clientState, i int, start time.Time) (terminal bool, events int, err error) {
	for {
		m, err := dec.Next()
		if err != nil {
			return false, events, err
		}
		events++
		if !st.connected {
			st.connected = true
			b.markConnected(i, start)
		}
		switch m.Event {
		case string(event.TypeProgress):
			b.onProgress(st, i, m)
		case string(event.TypeComplete), string(event.TypeError):
			return true, events, nil
		case string(event.TypeReset):
			st.resets++
		}
	}
}

// onProgress counts one progress event and records its latency.
func (b *bench) onProgress(st *clientState, i int, m event.Message) {
	now := time.Now().UnixNano()
	stamp, ok := parseStamp(m.Data)
	id, err := protocol.ParseID(m.ID)
	if !ok || err != nil {
		st.foreign++
		return
	}
	if !st.last.Less(id) {
		if id == st.last {
			st.dups++
		} else {
			st.ooo++
		}
		return
	}
	st.last = id
	st.accepted++
	st.hash += idHash(id)
	b.delivered[i%len(b.delivered)].n.Add(1)
	if stamp >= b.measureFrom.Load() {
		b.lat.record(i, time.Duration(now-stamp))
	}
	if b.replayCount > 0 && st.accepted == b.replayCount {
		atomicMax(&b.lastReplayed, int64(time.Since(b.connectStart)))
		b.replayed.Add(1)
	}
}

func (b *bench) markConnected(i int, start time.Time) {
	now := time.Now()
	b.connHist.record(i, now.Sub(start))
	atomicMax(&b.lastConnected, int64(now.Sub(b.connectStart)))
	b.connected.Add(1)
}

func (b *bench) finish(st *clientState) {
	st.finished = true
	b.finished.Add(1)
}

func (b *bench) fail(st *clientState, msg string) {
	st.failed = true
	b.failed.Add(1)
	b.errs.add(msg)
}

// counter is a padded atomic counter: one per shard of clients.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

func sumCounters(cs []counter) int64 {
	var n int64
	for i := range cs {
		n += cs[i].n.Load()
	}
	return n
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter returns d ±25%, so that reconnects do not arrive in step.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(rand.Int64N(int64(d)/2+1))
}

// shortErr drops the URL that net/http puts in every error.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
