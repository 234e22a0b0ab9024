package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
)

// clientIP is the address of the client behind r: the connection's peer,
// or, when the peer is a trusted proxy, the last address in
// X-Forwarded-For that is not one (each proxy appends its peer, so the
// addresses left of the last untrusted one are the client's own say).
func (s *Server) clientIP(r *http.Request) string {
	peer := remoteHost(r)
	if len(s.cfg.TrustedProxies) == 0 {
		return peer
	}
	addr, err := netip.ParseAddr(peer)
	if err != nil || !s.trusted(addr) {
		return peer
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client // garbage: stop at the last address known good
			}
			client = hop.Unmap().String()
			if !s.trusted(hop) {
				return client
			}
		}
	}
	return client
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// remoteHost is the connection's peer address.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ipCounts counts the open streams of each client address, for
// MaxConnectionsPerIP.
type ipCounts struct {
	mu sync.Mutex
	n  map[string]int
}

// add takes a slot for ip unless it has limit already; limit <= 0 is no
// limit (nothing is counted).
func (c *ipCounts) add(ip string, limit int) bool {
	if limit <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip] >= limit {
		return false
	}
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[ip]++
	return true
}

// done gives back a slot that add took.
func (c *ipCounts) done(ip string, limit int) {
	if limit <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}
