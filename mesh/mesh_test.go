package mesh

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv/wait"
)

func testConfig() Config {
	return Config{Bind: "127.0.0.1:0", ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		GossipInterval: 20 * time.Millisecond, PushPullInterval: 2 * time.Second}
}

func startN(t *testing.T, n int, keys [][]byte) []*Mesh {
	t.Helper()
	var out []*Mesh
	for i := 0; i < n; i++ {
		c := testConfig()
		c.Keys = keys
		m, err := New(c, Identity{Name: fmt.Sprintf("n%d", i), Role: "sensor", API: "x:1"}, Health{State: StateReady})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		if i > 0 {
			if _, err := m.Join([]string{out[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, m)
	}
	return out
}

func allSeeReady(ms []*Mesh, alive int) error {
	for _, m := range ms {
		n := 0
		for _, mb := range m.Members() {
			if mb.Alive && mb.Health.State == StateReady {
				n++
			}
		}
		if n != alive {
			return fmt.Errorf("%s sees %d alive and ready, want %d", m.local.Name, n, alive)
		}
	}
	return nil
}

func TestRecordsSpreadAndDeathIsSeen(t *testing.T) {
	ms := startN(t, 5, nil)
	wait.Eventually(t, 10*time.Second, func() error { return allSeeReady(ms, 5) })

	ms[1].Update(Health{State: StateError, Message: "disk full", SpecVersion: 7})
	wait.Eventually(t, 5*time.Second, func() error {
		for _, m := range ms {
			mb, ok := m.Member("n1")
			if !ok || mb.Health.State != StateError || mb.Health.SpecVersion != 7 {
				return fmt.Errorf("%s has n1 as %+v", m.local.Name, mb.Health)
			}
		}
		return nil
	})

	ms[4].Shutdown()
	wait.Eventually(t, 10*time.Second, func() error {
		for _, m := range ms[:4] {
			mb, _ := m.Member("n4")
			if mb.State() != StateOffline || mb.OfflineReason != "failed: no response to probes" {
				return fmt.Errorf("%s sees n4 %s (%q)", m.local.Name, mb.State(), mb.OfflineReason)
			}
		}
		return nil
	})

	if err := ms[3].Leave("maintenance", time.Second); err != nil {
		t.Fatal(err)
	}
	ms[3].Shutdown()
	wait.Eventually(t, 10*time.Second, func() error {
		for _, m := range ms[:3] {
			mb, _ := m.Member("n3")
			if mb.State() != StateOffline || mb.OfflineReason != "left: maintenance" {
				return fmt.Errorf("%s sees n3 %s (%q)", m.local.Name, mb.State(), mb.OfflineReason)
			}
		}
		return nil
	})
}

func TestWrongKeyCannotJoin(t *testing.T) {
	k1 := []byte("0123456789abcdef0123456789abcdef")
	k2 := []byte("fedcba9876543210fedcba9876543210")
	ms := startN(t, 2, [][]byte{k1})
	c := testConfig()
	c.Keys = [][]byte{k2}
	stranger, err := New(c, Identity{Name: "stranger"}, Health{})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Shutdown()
	if _, err := stranger.Join([]string{ms[0].Addr()}); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("join with the wrong key: %v", err)
	}
	if _, ok := ms[0].Member("stranger"); ok {
		t.Fatal("a node without the key got into the view")
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Bind: "nope"},
		{Bind: "127.0.0.1:0", ProbeInterval: time.Second, ProbeTimeout: 2 * time.Second},
		{Bind: "127.0.0.1:0", Keys: [][]byte{[]byte("short")}},
	}
	for i, c := range bad {
		c.setDefaults()
		if c.Validate() == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

// A node's own record that comes back to it through gossip (peers rebroadcast
// what is news to them) must not count as news: if it bumped Seq, the bumped
// record would be news to every peer again, and every record would circle
// the mesh forever, filling each gossip packet.
func TestOwnRecordEchoIsNotNews(t *testing.T) {
	m, err := New(Config{Bind: "127.0.0.1:0"}, Identity{Name: "a", Role: "sensor"}, Health{State: StateReady})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	d := &delegate{m}
	m.mu.RLock()
	rec := m.local
	m.mu.RUnlock()
	queued := m.queue.NumQueued()

	d.NotifyMsg(recordMsg(&rec))
	m.mu.RLock()
	seq := m.local.Seq
	m.mu.RUnlock()
	if seq != rec.Seq {
		t.Errorf("own record echoed back: Seq went from %d to %d", rec.Seq, seq)
	}
	if n := m.queue.NumQueued(); n != queued {
		t.Errorf("own record echoed back: %d broadcasts queued, want %d", n, queued)
	}

	// A record of us with a higher Seq than ours (held by a peer from before
	// a restart when the clock went back) is still overridden.
	newer := rec
	newer.Seq = rec.Seq + 10
	d.NotifyMsg(recordMsg(&newer))
	m.mu.RLock()
	seq = m.local.Seq
	m.mu.RUnlock()
	if seq <= newer.Seq {
		t.Errorf("stale record of us with Seq %d: ours is %d, want it higher", newer.Seq, seq)
	}
	if n := m.queue.NumQueued(); n <= queued {
		t.Errorf("stale record of us: our record was not rebroadcast")
	}
}

// Gossip bound to every address (the agent's default) advertises one of
// this machine's addresses: peers cannot reach 0.0.0.0.
func TestUnspecifiedBindAdvertisesAnInterfaceAddress(t *testing.T) {
	m, err := New(Config{Bind: "0.0.0.0:0"}, Identity{Name: "a", Role: "sensor"}, Health{State: StateReady})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	host, _, _ := net.SplitHostPort(m.Addr())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || host != AdvertiseIP() {
		t.Fatalf("advertised %s; want %s, an address of this machine", m.Addr(), AdvertiseIP())
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == host {
			return
		}
	}
	t.Fatalf("advertised %s, which is none of this machine's addresses %v", host, addrs)
}
