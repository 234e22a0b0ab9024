package gateway

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string
		want    string
	}{
		{"no trusted proxies: the peer", nil, "10.0.0.1:5000", []string{"203.0.113.7"}, "10.0.0.1"},
		{"untrusted peer: its header is ignored", trusted, "198.51.100.9:5000", []string{"203.0.113.7"}, "198.51.100.9"},
		{"trusted peer: the client it saw", trusted, "10.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"trusted peer, no header: the peer", trusted, "10.0.0.1:5000", nil, "10.0.0.1"},
		{"a chain of trusted proxies", trusted, "10.0.0.1:5000", []string{"203.0.113.7, 10.1.1.1", "10.2.2.2"}, "203.0.113.7"},
		{"a spoofed first hop is left of the real client", trusted, "10.0.0.1:5000", []string{"1.2.3.4, 203.0.113.7"}, "203.0.113.7"},
		{"all hops trusted: the leftmost", trusted, "10.0.0.1:5000", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"garbage stops the walk at the last good hop", trusted, "10.0.0.1:5000", []string{"not-an-ip, 10.1.1.1"}, "10.1.1.1"},
		{"IPv6 peer", trusted, "[::1]:5000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv4-mapped hop", trusted, "10.0.0.1:5000", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{cfg: Config{TrustedProxies: tc.trusted}}
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r); got != tc.want {
				t.Errorf("clientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestIPCounts(t *testing.T) {
	var c ipCounts
	for i, want := range []bool{true, true, false} {
		if got := c.add("a", 2); got != want {
			t.Fatalf("slot %d of a: %v, want %v", i+1, got, want)
		}
	}
	if !c.add("b", 2) {
		t.Fatal("b got no slot")
	}
	c.done("a", 2)
	if !c.add("a", 2) {
		t.Fatal("a freed slot was not given again")
	}
	c.done("a", 2)
	c.done("a", 2)
	c.done("b", 2)
	if len(c.n) != 0 {
		t.Errorf("counts left behind: %v", c.n)
	}
	if !c.add("x", 0) || len(c.n) != 0 {
		t.Error("no limit still counted")
	}
}
