package testenv

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// Spec describes one node of a test fleet.
type Spec struct {
	Name   string
	Role   string
	Site   string
	Labels map[string]string
	// IP is the node's loopback address (default: a fresh one). Tests set
	// it to know a joining node's source address beforehand.
	IP string
}

// Options shape a test fleet.
type Options struct {
	// Gateways is the number of gateways (the first bootstraps); Edges the
	// other nodes. Names default to gw1.. and e1..; roles cycle through
	// sensor, compute, storage, hybrid; sites alternate site-a and site-b.
	Gateways int
	Edges    []Spec
	// Log, if set, receives every node's log (tests use it to grep for
	// secrets).
	Log *slog.Logger
	// Tune may change each node's config before it starts.
	Tune func(*node.Config)
}

// Fleet is a fleet of real nodes in this process: real memberlist on its
// own 127.0.0.x address per node, real Raft on boltdb in temp dirs, real
// HTTPS. It can kill, restart and partition nodes.
type Fleet struct {
	t       testing.TB
	opts    Options
	base    string
	net     *Network
	mu      sync.Mutex
	nodes   map[string]*Member
	order   []string
	CA      []byte
	Admin   string
	Token   func(role string) string
	clients map[string]*api.Client
	// ContainerPrefix namespaces this fleet's containers on the shared
	// Docker engine; they are removed when the test ends.
	ContainerPrefix string
}

// Member is one node of the fleet and what is needed to restart it.
type Member struct {
	Spec
	IP      string
	DataDir string
	Node    *node.Node // nil while killed
}

var ipCounter atomic.Uint32

// nextIP hands out loopback addresses so that each node has its own and the
// Network can tell them apart. The range starts at 127.10.0.0 and is unique
// within the process; ports are picked by the kernel, so parallel test
// processes cannot collide.
func nextIP() string {
	n := ipCounter.Add(1)
	return fmt.Sprintf("127.10.%d.%d", (n/254)%256, n%254+1)
}

// TestTimings tighten the node for tests on a shared 2-core machine: fast
// failure detection, but not so fast that a busy CPU causes false alarms.
func TestTimings(c *node.Config) {
	c.HealthInterval = 300 * time.Millisecond
	c.Mesh.ProbeInterval = 200 * time.Millisecond
	c.Mesh.ProbeTimeout = 100 * time.Millisecond
	c.Mesh.GossipInterval = 50 * time.Millisecond
	c.Mesh.PushPullInterval = 5 * time.Second
	c.Raft.HeartbeatTimeout = 300 * time.Millisecond
	c.Raft.ElectionTimeout = 300 * time.Millisecond
	c.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
}

// NewFleet starts a fleet and waits until every node sees every other.
func NewFleet(t testing.TB, opts Options) *Fleet {
	t.Helper()
	if opts.Gateways < 1 {
		opts.Gateways = 1
	}
	f := &Fleet{t: t, opts: opts, net: NewNetwork(), nodes: map[string]*Member{}, clients: map[string]*api.Client{}}
	// The base dir is made before Close is registered, so cleanups (last in,
	// first out) stop the nodes before their data dirs are removed.
	f.base = t.TempDir()
	f.ContainerPrefix = "fmt" + randHex(4) + "-"
	t.Cleanup(f.removeContainers)
	t.Cleanup(f.Close)
	gw1 := f.add(Spec{Name: "gw1", Role: "gateway", Site: "site-a"})
	f.start(gw1, true, "")
	f.CA = gw1.Node.CAPEM()
	f.Admin = gw1.Node.OperatorToken
	for i := 2; i <= opts.Gateways; i++ {
		site := "site-a"
		if i%2 == 0 {
			site = "site-b"
		}
		m := f.add(Spec{Name: fmt.Sprintf("gw%d", i), Role: "gateway", Site: site})
		f.start(m, false, f.NewToken("gateway", 0))
	}
	roles := []string{"sensor", "compute", "storage", "hybrid"}
	for i, e := range opts.Edges {
		if e.Name == "" {
			e.Name = fmt.Sprintf("e%d", i+1)
		}
		if e.Role == "" {
			e.Role = roles[i%len(roles)]
		}
		if e.Site == "" {
			e.Site = []string{"site-a", "site-b"}[i%2]
		}
		m := f.add(e)
		f.start(m, false, f.NewToken(e.Role, 0))
	}
	f.WaitConverged(60 * time.Second)
	return f
}

func (f *Fleet) add(s Spec) *Member {
	m := &Member{Spec: s, IP: cmp.Or(s.IP, nextIP()), DataDir: filepath.Join(f.base, s.Name)}
	f.mu.Lock()
	f.nodes[s.Name] = m
	f.order = append(f.order, s.Name)
	f.mu.Unlock()
	return m
}

// Root is the scratch root filesystem the node's security checks see.
func (m *Member) Root() string { return m.DataDir + "-root" }

// Config is the node config the fleet uses for m.
func (f *Fleet) Config(m *Member, bootstrap bool, token string) node.Config {
	c := node.Config{
		DataDir: m.DataDir, Name: m.Name, Role: m.Role, Site: m.Site, Labels: m.Labels,
		Bind: net.JoinHostPort(m.IP, "0"), API: net.JoinHostPort(m.IP, "0"), RaftBind: net.JoinHostPort(m.IP, "0"),
		Bootstrap: bootstrap, Join: token,
		// A join that no address answers is retried; in a test, not forever.
		JoinTimeout: 30 * time.Second,
		Dial:        f.net.DialHook(m.IP),
		Apps:        node.AppsConfig{ContainerPrefix: f.ContainerPrefix, ResyncInterval: 2 * time.Second},
		// Never the host's own /: a test fleet checks and applies the
		// security policy to a scratch root per node.
		Hardening: node.HardeningConfig{Root: m.DataDir + "-root", Interval: time.Minute},
		Logger:    f.logger(m.Name),
	}
	TestTimings(&c)
	if f.opts.Tune != nil {
		f.opts.Tune(&c)
	}
	return c
}

func (f *Fleet) logger(name string) *slog.Logger {
	if f.opts.Log != nil {
		return f.opts.Log.With("node", name)
	}
	if os.Getenv("FLEETMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	return slog.New(slog.DiscardHandler)
}

func (f *Fleet) start(m *Member, bootstrap bool, token string) {
	f.t.Helper()
	os.MkdirAll(m.DataDir+"-root", 0o755)
	n, err := node.Start(f.Config(m, bootstrap, token))
	if err != nil {
		f.t.Fatalf("start %s: %v", m.Name, err)
	}
	f.mu.Lock()
	m.Node = n
	f.mu.Unlock()
}

// Join starts a new node with the given spec and token.
func (f *Fleet) Join(s Spec, token string) (*Member, error) {
	m := f.add(s)
	os.MkdirAll(m.DataDir+"-root", 0o755)
	n, err := node.Start(f.Config(m, false, token))
	if err != nil {
		f.mu.Lock()
		delete(f.nodes, s.Name)
		f.order = f.order[:len(f.order)-1]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Lock()
	m.Node = n
	f.mu.Unlock()
	return m, nil
}

// NewToken creates a join token through a live gateway.
func (f *Fleet) NewToken(role string, uses int) string {
	f.t.Helper()
	var tok string
	Eventually(f.t, 20*time.Second, func() error {
		r, err := f.Client(f.AnyLive("gateway")).CreateToken(context.Background(), api.TokenCreateRequest{Role: role, TTL: "1h", Uses: uses})
		if err != nil {
			return err
		}
		tok = r.Token
		return nil
	})
	return tok
}

// Member returns a node by name.
func (f *Fleet) Member(name string) *Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.nodes[name]
	if !ok {
		f.t.Fatalf("no node %q in the test fleet", name)
	}
	return m
}

// running returns a member's node, read under the fleet's lock (Kill and
// Restart change it), or nil when the node is not running.
func (f *Fleet) running(name string) *node.Node {
	m := f.Member(name)
	f.mu.Lock()
	defer f.mu.Unlock()
	return m.Node
}

// Names lists the nodes in start order.
func (f *Fleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// Live returns the running nodes' names.
func (f *Fleet) Live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range f.order {
		if f.nodes[n].Node != nil {
			out = append(out, n)
		}
	}
	return out
}

// AnyLive returns a running node of the role ("" for any).
func (f *Fleet) AnyLive(role string) string {
	for _, n := range f.Live() {
		if role == "" || f.Member(n).Role == role {
			return n
		}
	}
	f.t.Fatalf("no live node with role %q", role)
	return ""
}

// Leader returns the current Raft leader's name, or "".
func (f *Fleet) Leader() string {
	for _, n := range f.Live() {
		if nd := f.running(n); nd != nil && nd.IsLeader() {
			return n
		}
	}
	return ""
}

// Client returns an admin API client for a node (its current address).
func (f *Fleet) Client(name string) *api.Client {
	return f.ClientWith(name, f.Admin)
}

// ClientWith returns an API client for a node with a credential.
func (f *Fleet) ClientWith(name, cred string) *api.Client {
	nd := f.running(name)
	if nd == nil {
		f.t.Fatalf("node %s is not running", name)
	}
	c, err := api.NewClient(nd.APIAddr(), cred, f.CA)
	if err != nil {
		f.t.Fatalf("client for %s: %v", name, err)
	}
	return c
}

// Kill stops a node abruptly (no leave message), as a crash would.
func (f *Fleet) Kill(name string) {
	m := f.Member(name)
	f.mu.Lock()
	nd := m.Node
	m.Node = nil
	f.mu.Unlock()
	if nd != nil {
		nd.Kill()
	}
}

// Stop stops a node gracefully.
func (f *Fleet) Stop(name string) {
	m := f.Member(name)
	f.mu.Lock()
	nd := m.Node
	m.Node = nil
	f.mu.Unlock()
	if nd != nil {
		nd.Close()
	}
}

// Restart starts a killed or stopped node again from its data dir, with no
// token.
func (f *Fleet) Restart(name string) {
	f.t.Helper()
	m := f.Member(name)
	if f.running(name) != nil {
		f.t.Fatalf("restart %s: still running", name)
	}
	f.start(m, false, "")
}

// Partition splits the fleet: nodes in different groups cannot exchange a
// packet; nodes in no group reach everyone.
func (f *Fleet) Partition(groups ...[]string) {
	var ipGroups [][]string
	for _, g := range groups {
		var ips []string
		for _, n := range g {
			ips = append(ips, f.Member(n).IP)
		}
		ipGroups = append(ipGroups, ips)
	}
	f.net.Partition(ipGroups...)
}

// Heal removes every partition.
func (f *Fleet) Heal() { f.net.Heal() }

// FleetView is GET /v1/fleet on a node.
func (f *Fleet) FleetView(name string) (*api.Fleet, api.Meta, error) {
	return f.Client(name).Fleet(context.Background())
}

// WaitConverged waits until every live node sees every live node online.
func (f *Fleet) WaitConverged(timeout time.Duration) {
	f.t.Helper()
	Eventually(f.t, timeout, func() error {
		live := f.Live()
		for _, n := range live {
			fv, _, err := f.FleetView(n)
			if err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
			if fv.Online != len(live) {
				return fmt.Errorf("%s sees %d online, want %d (by state %v)", n, fv.Online, len(live), fv.ByState)
			}
		}
		return nil
	})
}

// NodeState is the state of target as observer sees it.
func (f *Fleet) NodeState(observer, target string) (string, error) {
	v, _, err := f.Client(observer).Node(context.Background(), target)
	if err != nil {
		return "", err
	}
	return v.State, nil
}

// Close stops every node.
func (f *Fleet) Close() {
	for _, n := range f.Live() {
		f.Kill(n)
	}
}
