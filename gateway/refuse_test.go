package gateway

import (
	"testing"
	"testing/synctest"
	"time"
)

// The retry hint of a limit refusal follows the refusals of about the last
// second, whatever the clock's seconds: a burst that straddles the turn of
// a second backs off as one that does not, and once refusals stop the hint
// falls back to the base.
func TestRefusedBackoffFollowsTheLastSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{cfg: Config{Retry: 100 * time.Millisecond}}
		// The bubble's clock starts on a whole second: 100 refusals 1 ms
		// apart from 950 ms on cross into the next one halfway.
		time.Sleep(950 * time.Millisecond)
		var last time.Duration
		for range 100 {
			last = s.refusedBackoff()
			time.Sleep(time.Millisecond)
		}
		// About 95 refusals within the last 100 ms (those before decay
		// little): the hint is near Retry × 95/2.
		if want := 40 * s.cfg.Retry; last < want {
			t.Errorf("after 100 refusals in 100 ms across a second's turn the hint is %v; want at least %v", last, want)
		}
		if limit := time.Minute; last > limit {
			t.Errorf("hint %v over the cap %v", last, limit)
		}
		time.Sleep(5 * time.Second)
		if got := s.refusedBackoff(); got != s.cfg.Retry {
			t.Errorf("5 s after the burst the hint is %v; want the base %v", got, s.cfg.Retry)
		}
		// A steady rate of 20 refusals a second settles near Retry × 10.
		for range 100 {
			last = s.refusedBackoff()
			time.Sleep(50 * time.Millisecond)
		}
		if lo, hi := 8*s.cfg.Retry, 12*s.cfg.Retry; last < lo || last > hi {
			t.Errorf("at 20 refusals a second the hint is %v; want %v to %v", last, lo, hi)
		}
	})
}
