package redistest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SlotCount is the number of hash slots of a Redis Cluster.
const SlotCount = 16384

// Cluster is a real Redis Cluster of three masters (and, WithReplicas, one
// replica each) on loopback ports, owned by a test. Every node is stopped
// when the test ends.
type Cluster struct {
	tb       testing.TB
	replicas bool
	nodes    []*clusterNode // masters first, then their replicas in the same order
}

// clusterNode is one process of the cluster and a client kept open to it
// for the helper's own commands.
type clusterNode struct {
	srv   *Server
	id    string
	admin *redis.Client
}

// Node is a snapshot of one cluster node: its address, its node ID
// (CLUSTER MYID) and, for a master, the slot ranges it owned when the
// snapshot was taken.
type Node struct {
	Addr     string
	ID       string
	MasterID string // for a replica, the ID of its master; "" for a master
	Slots    []SlotRange
	Server   *Server // the process, for Kill, Pause, Resume
}

// SlotRange is an inclusive range of hash slots.
type SlotRange struct{ Start, End int }

// Has reports whether n owned slot when the snapshot was taken.
func (n *Node) Has(slot int) bool {
	for _, r := range n.Slots {
		if slot >= r.Start && slot <= r.End {
			return true
		}
	}
	return false
}

// ClusterOption changes how StartCluster builds the cluster.
type ClusterOption func(*Cluster)

// WithReplicas gives every master one replica.
func WithReplicas() ClusterOption { return func(c *Cluster) { c.replicas = true } }

// clusterArgs are the redis-server arguments of a cluster node, on top of
// Server's defaults. The cluster bus gets a port of its own (the default,
// port+10000, may be past 65535 for an ephemeral port).
func clusterArgs(dir string, busPort int) []string {
	return []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", dir + "/nodes.conf",
		"--cluster-port", strconv.Itoa(busPort),
		"--cluster-node-timeout", "1000",
		"--repl-diskless-sync-delay", "0", // replicas sync at once, not after 5 s
	}
}

// masterSlots is how three masters split the slots (as redis-cli does).
var masterSlots = []SlotRange{{0, 5460}, {5461, 10922}, {10923, 16383}}

// StartCluster starts a three-master Redis Cluster, assigns the slots and
// waits until every node reports cluster_state:ok and all agree on the slot
// map. It skips tb where there is no redis-server, unless CI is set, where
// it fails.
func StartCluster(tb testing.TB, opts ...ClusterOption) *Cluster {
	tb.Helper()
	requireBinary(tb)
	c := &Cluster{tb: tb}
	for _, o := range opts {
		o(c)
	}
	n := len(masterSlots)
	if c.replicas {
		n *= 2
	}
	for i := 0; i < n; i++ {
		dir := tb.TempDir()
		srv := startServer(tb, dir, "", func() []string {
			busPort, _ := FreePort()
			return clusterArgs(dir, busPort)
		})
		node := &clusterNode{srv: srv, admin: adminClient(tb, srv.Addr())}
		node.id = c.do(tb, node, "CLUSTER", "MYID").(string)
		c.nodes = append(c.nodes, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Slots and distinct config epochs first, while every node is alone
	// (SET-CONFIG-EPOCH refuses a node that knows others).
	for i, r := range masterSlots {
		c.do(tb, c.nodes[i], "CLUSTER", "ADDSLOTSRANGE", r.Start, r.End)
		c.do(tb, c.nodes[i], "CLUSTER", "SET-CONFIG-EPOCH", i+1)
	}
	// Every node meets every other, so no one waits for gossip to learn of
	// a node (with one seed, discovery took about 2 s instead of 0.2 s).
	for i, node := range c.nodes {
		host, port, bus := node.busAddr(ctx, tb)
		for _, other := range c.nodes[:i] {
			c.do(tb, other, "CLUSTER", "MEET", host, port, bus)
		}
	}
	waitFor(tb, 10*time.Second, "cluster nodes to meet", func() error {
		for _, node := range c.nodes {
			lines, err := clusterNodes(ctx, node.admin)
			if err != nil {
				return err
			}
			if len(lines) != len(c.nodes) {
				return fmt.Errorf("%s knows %d of %d nodes", node.srv.Addr(), len(lines), len(c.nodes))
			}
			for _, l := range lines {
				if l.hasFlag("handshake") || l.hasFlag("noaddr") {
					return fmt.Errorf("%s: %s still in handshake", node.srv.Addr(), l.id)
				}
			}
		}
		return nil
	})
	if c.replicas {
		for i, node := range c.nodes[len(masterSlots):] {
			c.do(tb, node, "CLUSTER", "REPLICATE", c.nodes[i].id)
		}
	}
	c.WaitAgreed(tb)
	if c.replicas {
		waitFor(tb, 10*time.Second, "replicas to sync", func() error {
			for _, node := range c.nodes[len(masterSlots):] {
				info, err := node.admin.Info(ctx, "replication").Result()
				if err != nil {
					return err
				}
				if infoField(info, "master_link_status") != "up" {
					return fmt.Errorf("replica %s: master link %q", node.srv.Addr(), infoField(info, "master_link_status"))
				}
			}
			return nil
		})
	}
	return c
}

// busAddr returns the node's host, port and cluster bus port, as CLUSTER
// MEET takes them. (A lone node does not know its own IP yet: its CLUSTER
// NODES line says ":port@cport".)
func (n *clusterNode) busAddr(ctx context.Context, tb testing.TB) (host string, port, bus int) {
	tb.Helper()
	lines, err := clusterNodes(ctx, n.admin)
	if err != nil {
		tb.Fatalf("redistest: cluster nodes of %s: %v", n.srv.Addr(), err)
	}
	for _, l := range lines {
		if l.hasFlag("myself") {
			return "127.0.0.1", n.srv.port, l.bus
		}
	}
	tb.Fatalf("redistest: %s has no myself line", n.srv.Addr())
	return "", 0, 0
}

// URL returns redis+cluster://first?addr=second&addr=third, the seed nodes
// being the masters.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	q := make([]string, 0, len(addrs)-1)
	for _, a := range addrs[1:] {
		q = append(q, "addr="+a)
	}
	return "redis+cluster://" + addrs[0] + "?" + strings.Join(q, "&")
}

// Addrs returns the address of every master, in start order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, 0, len(masterSlots))
	for _, n := range c.nodes[:len(masterSlots)] {
		addrs = append(addrs, n.srv.Addr())
	}
	return addrs
}

// Client returns a new cluster client seeded with Addrs, closed when the
// test ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: time.Second})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Masters returns a snapshot of the masters, in start order, with the slots
// each owns now (as the first live node sees it).
func (c *Cluster) Masters() []*Node {
	c.tb.Helper()
	var out []*Node
	for _, n := range c.snapshot(c.tb) {
		if n.MasterID == "" {
			out = append(out, n)
		}
	}
	return out
}

// Replicas returns a snapshot of the replicas (none without WithReplicas).
func (c *Cluster) Replicas() []*Node {
	c.tb.Helper()
	var out []*Node
	for _, n := range c.snapshot(c.tb) {
		if n.MasterID != "" {
			out = append(out, n)
		}
	}
	return out
}

// NodeForSlot returns the master owning slot now, or nil when none does.
func (c *Cluster) NodeForSlot(slot int) *Node {
	c.tb.Helper()
	for _, n := range c.Masters() {
		if n.Has(slot) {
			return n
		}
	}
	return nil
}

// SlotOf returns the hash slot of key: CRC16 of the key, or of its hash tag
// (the part between the first "{" and the next "}", when not empty).
func SlotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % SlotCount)
}

// SlotOf is SlotOf(key), as a method for convenience.
func (c *Cluster) SlotOf(key string) int { return SlotOf(key) }

// KeyInSlot returns a key "prefix{tag}" whose slot is slot.
func KeyInSlot(prefix string, slot int) string {
	for i := 0; ; i++ {
		tag := strconv.Itoa(i)
		if SlotOf("{"+tag+"}") == slot {
			return prefix + "{" + tag + "}"
		}
	}
}

// KeyOn returns a key "prefix{tag}" that hashes to a slot n owns.
func KeyOn(prefix string, n *Node) string {
	for i := 0; ; i++ {
		tag := strconv.Itoa(i)
		if n.Has(SlotOf("{" + tag + "}")) {
			return prefix + "{" + tag + "}"
		}
	}
}

// MigrateSlot moves slot to the master to, live, as redis-cli --cluster
// reshard does: the target imports and the source migrates the slot, its
// keys move in batches with MIGRATE, then every master is told the new
// owner. Clients may go on reading and writing keys of the slot throughout
// (they get ASK, then MOVED, replies). It returns when every node agrees
// on the new owner.
func (c *Cluster) MigrateSlot(tb testing.TB, slot int, to *Node) {
	tb.Helper()
	from := c.NodeForSlot(slot)
	if from == nil {
		tb.Fatalf("redistest: slot %d has no owner", slot)
	}
	if from.ID == to.ID {
		return
	}
	src, dst := c.node(tb, from.ID), c.node(tb, to.ID)
	c.do(tb, dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
	c.do(tb, src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id)
	host, port, _ := net.SplitHostPort(dst.srv.Addr())
	for {
		keys, err := src.admin.ClusterGetKeysInSlot(context.Background(), slot, 100).Result()
		if err != nil {
			tb.Fatalf("redistest: CLUSTER GETKEYSINSLOT %d: %v", slot, err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "REPLACE", "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		c.do(tb, src, args...)
	}
	// The target first, so it owns the slot (and bumps its epoch) before
	// the source starts answering MOVED; then the source, then the rest.
	c.do(tb, dst, "CLUSTER", "SETSLOT", slot, "NODE", dst.id)
	c.do(tb, src, "CLUSTER", "SETSLOT", slot, "NODE", dst.id)
	for _, n := range c.nodes[:len(masterSlots)] {
		if n != src && n != dst && n.alive() {
			c.do(tb, n, "CLUSTER", "SETSLOT", slot, "NODE", dst.id)
		}
	}
	c.WaitAgreed(tb)
}

// WaitAgreed waits (10 s at most) until every live node reports
// cluster_state:ok, none has a slot in migration, and all of them have the
// same view of nodes, roles and slots.
func (c *Cluster) WaitAgreed(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	waitFor(tb, 10*time.Second, "cluster nodes to agree", func() error {
		var first string
		for _, n := range c.nodes {
			if !n.alive() {
				continue
			}
			info, err := n.admin.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if st := infoField(info, "cluster_state"); st != "ok" {
				return fmt.Errorf("%s: cluster_state:%s", n.srv.Addr(), st)
			}
			lines, err := clusterNodes(ctx, n.admin)
			if err != nil {
				return err
			}
			view := make([]string, 0, len(lines))
			for _, l := range lines {
				if l.migrating {
					return fmt.Errorf("%s: a slot is still migrating", n.srv.Addr())
				}
				view = append(view, l.canonical())
			}
			slices.Sort(view)
			v := strings.Join(view, "\n")
			if first == "" {
				first = v
			} else if v != first {
				return fmt.Errorf("%s sees\n%s\nnot\n%s", n.srv.Addr(), v, first)
			}
		}
		return nil
	})
}

// Kill stops node's process with SIGKILL, as a crash would.
func (c *Cluster) Kill(n *Node) { c.node(c.tb, n.ID).srv.Kill() }

// Stop stops every node; the test's cleanup does it anyway.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		n.srv.Stop()
	}
}

// Do runs one command on node n and returns its reply.
func (c *Cluster) Do(tb testing.TB, n *Node, args ...any) any {
	tb.Helper()
	return c.do(tb, c.node(tb, n.ID), args...)
}

func (c *Cluster) node(tb testing.TB, id string) *clusterNode {
	tb.Helper()
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	tb.Fatalf("redistest: no cluster node %s", id)
	return nil
}

func (c *Cluster) do(tb testing.TB, n *clusterNode, args ...any) any {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := n.admin.Do(ctx, args...).Result()
	if err != nil && err != redis.Nil {
		tb.Fatalf("redistest: %s: %v: %v", n.srv.Addr(), args, err)
	}
	return v
}

// snapshot returns every node as the first live node's CLUSTER NODES
// describes it, in start order.
func (c *Cluster) snapshot(tb testing.TB) []*Node {
	tb.Helper()
	var lastErr error
	for _, n := range c.nodes {
		if !n.alive() {
			continue
		}
		lines, err := clusterNodes(context.Background(), n.admin)
		if err != nil {
			lastErr = err
			continue
		}
		byID := map[string]nodeLine{}
		for _, l := range lines {
			byID[l.id] = l
		}
		out := make([]*Node, 0, len(c.nodes))
		for _, cn := range c.nodes {
			l := byID[cn.id]
			node := &Node{Addr: cn.srv.Addr(), ID: cn.id, Slots: l.slots, Server: cn.srv}
			if l.hasFlag("slave") {
				node.MasterID = l.master
			}
			out = append(out, node)
		}
		return out
	}
	tb.Fatalf("redistest: no cluster node answers: %v", lastErr)
	return nil
}

func (n *clusterNode) alive() bool {
	n.srv.mu.Lock()
	defer n.srv.mu.Unlock()
	return n.srv.cmd != nil && !n.srv.paused
}

// nodeLine is one parsed line of CLUSTER NODES.
type nodeLine struct {
	id, addr, master string
	bus              int
	flags            []string
	slots            []SlotRange
	migrating        bool // the line lists a slot being imported or migrated
}

func (l nodeLine) hasFlag(f string) bool { return slices.Contains(l.flags, f) }

// canonical is the part of the line every node must agree on.
func (l nodeLine) canonical() string {
	flags := slices.DeleteFunc(slices.Clone(l.flags), func(f string) bool { return f == "myself" })
	return fmt.Sprintf("%s %s %s %s %v", l.id, l.addr, strings.Join(flags, ","), l.master, l.slots)
}

func clusterNodes(ctx context.Context, c *redis.Client) ([]nodeLine, error) {
	s, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []nodeLine
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("bad CLUSTER NODES line %q", line)
		}
		l := nodeLine{id: f[0], flags: strings.Split(f[2], ",")}
		if f[3] != "-" {
			l.master = f[3]
		}
		// ip:port@cport[,hostname]
		addr, _, _ := strings.Cut(f[1], ",")
		addr, bus, _ := strings.Cut(addr, "@")
		l.addr = addr
		l.bus, _ = strconv.Atoi(bus)
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				l.migrating = true
				continue
			}
			a, b, ok := strings.Cut(s, "-")
			lo, _ := strconv.Atoi(a)
			hi := lo
			if ok {
				hi, _ = strconv.Atoi(b)
			}
			l.slots = append(l.slots, SlotRange{lo, hi})
		}
		out = append(out, l)
	}
	return out, nil
}

// requireBinary skips tb when there is no redis-server, or fails it in CI.
func requireBinary(tb testing.TB) {
	tb.Helper()
	if Binary() != "" {
		return
	}
	if InCI() {
		tb.Fatal("redistest: redis-server not found and CI is set; install it (apt-get install redis-server)")
	}
	tb.Skip("redistest: redis-server not found")
}

// startServer starts a real redis-server with its data in dir, on a free
// port (retrying on another one if the port was taken meanwhile), stopped
// when the test ends. args is called before each attempt for the extra
// arguments, so it may pick ports of its own.
func startServer(tb testing.TB, dir, conf string, args func() []string) *Server {
	tb.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s := &Server{tb: tb, bin: Binary(), dir: dir, conf: conf}
		if s.port, err = FreePort(); err != nil {
			continue
		}
		if args != nil {
			s.args = args()
		}
		if err = s.start(); err == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", err)
	return nil
}

// adminClient is a client for the helpers' own commands, closed when the
// test ends. It does not retry, so a dead node fails fast.
func adminClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		PoolSize: 2, Protocol: 2,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// waitFor polls cond every 20 ms until it returns nil, failing tb with the
// last error after timeout.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: waiting %v for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoField returns the value of field in an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the hash of Redis Cluster
// key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
