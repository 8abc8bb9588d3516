package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// A restart with nothing but the data dir binds and advertises what the
// node was made with; settings that contradict the data dir are refused.
func TestRestartKeepsAddressesAndRefusesContradictions(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor", Site: "site-a"}}})
	m := f.Member("s1")
	api, gossip := m.Node.APIAddr(), m.Node.GossipAddr()
	f.Stop("s1")

	for _, bad := range []struct {
		cfg  node.Config
		want string
	}{
		{node.Config{DataDir: m.DataDir, Name: "other"}, `belongs to node "s1"`},
		{node.Config{DataDir: m.DataDir, Role: "compute"}, "role cannot change"},
		{node.Config{DataDir: m.DataDir, Site: "site-z"}, "site"},
		{node.Config{DataDir: m.DataDir, Labels: map[string]string{"x": "y"}}, "labels cannot change"},
	} {
		if n, err := node.Start(bad.cfg); err == nil || !strings.Contains(err.Error(), bad.want) {
			if n != nil {
				n.Close()
			}
			t.Fatalf("restart with %+v: %v, want an error mentioning %q", bad.cfg, err, bad.want)
		}
	}

	c := f.Config(m, false, "")
	c.Bind, c.API, c.RaftBind, c.Name, c.Role, c.Site = "", "", "", "", "", ""
	n, err := node.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.APIAddr() != api || n.GossipAddr() != gossip {
		t.Fatalf("restart moved the node: api %s -> %s, gossip %s -> %s", api, n.APIAddr(), gossip, n.GossipAddr())
	}
	if n.Name() != "s1" || n.Role() != "sensor" {
		t.Fatalf("restart changed identity: %s %s", n.Name(), n.Role())
	}
}

// A node hard-killed and started again at once from its data dir, at the
// same address (IP and ports), several times in a row: its peers still
// believe the old incarnation alive and keep probing it, gossiping and
// push/pulling with it and calling its API and Raft port while it starts,
// and operators keep reading /v1/fleet and creating tokens through every
// node. Each time it comes back online on every other node, with the spec
// version the fleet had, and nothing panics (memberlist calls the mesh's
// hooks before mesh.New returns; see TestHooksWorkBeforeMemberlistIsUp). An
// edge, a follower gateway and the Raft leader each go through it, with the
// test timings and with the product's faster probes. Under -race it also
// sees a killed node's requests outlive Kill (they used to, racing with
// stop on the peer client).
func TestRestartAtSameAddressUnderLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		tune func(*node.Config)
	}{
		{"test-timings", testenv.TestTimings},
		{"product-timings", testenv.ProductTimings},
	} {
		t.Run(tc.name, func(t *testing.T) {
			panics := &panicLog{}
			f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Role: "sensor"}, {Role: "compute"}},
				Tune: tc.tune, Log: slog.New(panics)})
			load := startLoad(t, f)
			for _, pick := range []func() string{
				func() string { return "e1" },
				func() string { return followerGateway(t, f) },
				func() string { return raftLeader(t, f) },
			} {
				for range 3 {
					name := pick()
					f.Kill(name)
					f.Restart(name)
					waitBackEverywhere(t, f, name)
				}
			}
			reads, writes := load.stop()
			if reads == 0 || writes == 0 {
				t.Errorf("the load did not get through: %d reads, %d writes", reads, writes)
			}
			panics.check(t)
		})
	}
}

// load reads /v1/fleet and creates tokens through every node of a fleet, in
// turn, until stopped. Its clients are made once: a node restarted at the
// same address is called at that address again, and calls to a node that
// is down or starting fail, which is expected.
type load struct {
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	reads, writes atomic.Int64
}

func startLoad(t *testing.T, f *testenv.Fleet) *load {
	var clients []*api.Client
	for _, n := range f.Names() {
		clients = append(clients, f.Client(n))
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	loop := func(call func(context.Context, *api.Client) error, ok *atomic.Int64) {
		defer l.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			if call(cctx, clients[i%len(clients)]) == nil {
				ok.Add(1)
			}
			ccancel()
		}
	}
	l.wg.Add(2)
	go loop(func(ctx context.Context, c *api.Client) error { _, _, err := c.Fleet(ctx); return err }, &l.reads)
	go loop(func(ctx context.Context, c *api.Client) error {
		_, err := c.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1m"})
		return err
	}, &l.writes)
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load and returns how many reads and writes succeeded.
func (l *load) stop() (reads, writes int64) {
	l.cancel()
	l.wg.Wait()
	return l.reads.Load(), l.writes.Load()
}

// panicLog is a slog handler that keeps the records that speak of a panic.
// net/http recovers a handler's panic and only logs it (through the node's
// logger), so a nil dereference in a handler would otherwise go unseen.
type panicLog struct {
	mu    sync.Mutex
	lines []string
}

func (p *panicLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicLog) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *panicLog) WithGroup(string) slog.Handler            { return p }

func (p *panicLog) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		p.mu.Lock()
		p.lines = append(p.lines, r.Message)
		p.mu.Unlock()
	}
	return nil
}

func (p *panicLog) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		t.Errorf("a node logged a panic: %s", l)
	}
}

func raftLeader(t *testing.T, f *testenv.Fleet) string {
	t.Helper()
	var l string
	testenv.Eventually(t, 15*time.Second, func() error {
		if l = f.Leader(); l == "" {
			return errors.New("no Raft leader")
		}
		return nil
	})
	return l
}

func followerGateway(t *testing.T, f *testenv.Fleet) string {
	t.Helper()
	l := raftLeader(t, f)
	for _, n := range f.Live() {
		if n != l && f.Member(n).Role == "gateway" {
			return n
		}
	}
	t.Fatal("no follower gateway")
	return ""
}

// waitBackEverywhere waits until name has the spec version the leader has
// now, and every other live node sees it ready with that version.
func waitBackEverywhere(t *testing.T, f *testenv.Fleet, name string) {
	t.Helper()
	ctx := context.Background()
	want := f.Member(raftLeader(t, f)).Node.Store().Version()
	testenv.Eventually(t, 20*time.Second, func() error {
		self, _, err := f.Client(name).Node(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if self.SpecVersion < want {
			return fmt.Errorf("%s at spec %d, want >= %d", name, self.SpecVersion, want)
		}
		for _, obs := range f.Live() {
			if obs == name {
				continue
			}
			v, _, err := f.Client(obs).Node(ctx, name)
			if err != nil {
				return fmt.Errorf("%s: %w", obs, err)
			}
			if v.State != "ready" || v.SpecVersion < want {
				return fmt.Errorf("%s sees %s %s (%s) at spec %d, want ready at >= %d", obs, name, v.State, v.OfflineReason, v.SpecVersion, want)
			}
		}
		return nil
	})
}

// A gateway whose API is on loopback while its gossip faces the network
// cannot be joined or copied from by other devices: the agent warns. With
// both on the network, or both on loopback (a fleet on one machine), it
// does not.
func TestLoopbackAPIBesideNetworkGossipIsWarnedAbout(t *testing.T) {
	if ip := net.ParseIP(mesh.AdvertiseIP()); ip == nil || ip.IsLoopback() {
		t.Skip("this machine has no network interface address to advertise")
	}
	const warning = "API is on a loopback address while gossip faces the network"
	for _, tc := range []struct {
		name      string
		bind, api string
		warned    bool
	}{
		{"gossip on the network, API on loopback", "0.0.0.0:0", "", true},
		{"both on the network", "0.0.0.0:0", "0.0.0.0:0", false},
		{"both on loopback", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			testenv.NewFleet(t, testenv.Options{Gateways: 1,
				Log: slog.New(slog.NewTextHandler(logs, nil)),
				Tune: func(c *node.Config) {
					if tc.bind != "" {
						c.Bind = tc.bind
					}
					if tc.api != "" {
						c.API = tc.api
					}
				}})
			if got := strings.Contains(logs.String(), warning); got != tc.warned {
				t.Errorf("warned %v, want %v; log:\n%s", got, tc.warned, logs.String())
			}
		})
	}
}
