package testenv

import (
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node"
)

// debugLog, when FLEETMESH_DEBUG_LOG names a file, receives every mesh
// fleet member's memberlist log at debug level (each line with self=NAME):
// what a false offline verdict in a benchmark is diagnosed from.
var debugLog = func() *os.File {
	if p := os.Getenv("FLEETMESH_DEBUG_LOG"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			panic("FLEETMESH_DEBUG_LOG: " + err.Error())
		}
		return f
	}
	return nil
}()

// MeshFleet is a fleet of bare gossip members (mesh.Mesh, with an encrypted
// keyring as a real fleet has, each on its own 127.10.x.y address) and
// nothing else: no Raft, no API, no TLS, no spec sync. Each member gossips a
// node-sized health record every health interval, as an agent does.
// Benchmarks use it to measure the mesh layer at sizes where whole nodes in
// one process would not fit on a small machine; what it measures is the
// mesh with the timings it is given, not a whole agent.
type MeshFleet struct {
	t      testing.TB
	cfg    mesh.Config
	health time.Duration
	key    []byte
	// seeds are gossip addresses the first member joins through (a fleet
	// of agents, for JoinMeshFleet).
	seeds []string

	mu      sync.Mutex
	members map[string]*meshMember
	order   []string
	seq     int
}

type meshMember struct {
	m    *mesh.Mesh
	stop chan struct{}
	done chan struct{}
}

// NewMeshFleet starts n members with cfg's timings (zero fields take the
// mesh defaults) and health gossip every health (zero: the agent's
// default), and waits until every member sees every other alive.
func NewMeshFleet(t testing.TB, n int, cfg mesh.Config, health time.Duration) *MeshFleet {
	t.Helper()
	key := make([]byte, 32)
	crand.Read(key)
	return JoinMeshFleet(t, n, cfg, health, key, nil)
}

// JoinMeshFleet is NewMeshFleet for members that join an existing mesh
// (a fleet of agents) through seeds, with its gossip key: benchmarks use it
// to give a few whole agents a view of many members.
func JoinMeshFleet(t testing.TB, n int, cfg mesh.Config, health time.Duration, key []byte, seeds []string) *MeshFleet {
	t.Helper()
	if health == 0 {
		health = node.DefaultHealthInterval
	}
	f := &MeshFleet{t: t, cfg: cfg, health: health, key: key, seeds: seeds, members: map[string]*meshMember{}}
	t.Cleanup(f.Close)
	for range n {
		if _, err := f.Add(); err != nil {
			t.Fatalf("mesh fleet: %v", err)
		}
	}
	if err := f.WaitConverged(2 * time.Minute); err != nil {
		t.Fatalf("mesh fleet of %d did not converge: %v", n, err)
	}
	return f
}

// Add starts one more member and joins it through up to three live ones.
func (f *MeshFleet) Add() (string, error) {
	f.mu.Lock()
	f.seq++
	name := fmt.Sprintf("m%d", f.seq)
	var seeds []string
	for i := len(f.order) - 1; i >= 0 && len(seeds) < 3; i-- {
		seeds = append(seeds, f.members[f.order[i]].m.Addr())
	}
	seeds = append(seeds, f.seeds...)
	f.mu.Unlock()

	cfg := f.cfg
	ip := nextIP()
	cfg.Bind = net.JoinHostPort(ip, "0")
	cfg.Keys = [][]byte{f.key}
	if debugLog != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(debugLog, &slog.HandlerOptions{Level: slog.LevelDebug})).With("self", name)
	}
	id := mesh.Identity{Name: name, Role: "sensor", Site: "site-a", API: net.JoinHostPort(ip, "7400"), Version: node.Version}
	m, err := mesh.New(cfg, id, fakeHealth())
	if err != nil {
		return "", err
	}
	if len(seeds) > 0 {
		if _, err := m.Join(seeds); err != nil {
			m.Shutdown()
			return "", fmt.Errorf("join %s: %w", name, err)
		}
	}
	mm := &meshMember{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go f.healthLoop(mm)
	f.mu.Lock()
	f.members[name] = mm
	f.order = append(f.order, name)
	f.mu.Unlock()
	return name, nil
}

func fakeHealth() mesh.Health {
	temp := 40 + rand.Float64()*20
	return mesh.Health{State: mesh.StateReady, CPUPercent: rand.Float64() * 100, MemPercent: rand.Float64() * 100,
		DiskPercent: 42.1, TempC: &temp, Load1: rand.Float64() * 4, UptimeSec: uint64(rand.IntN(1e6)), SpecVersion: 17}
}

// healthLoop gossips a fresh health record every health interval (with
// jitter, so members do not beat in step) and, like the agent's reconnect
// loop, knocks on up to three failed members every five probe intervals so
// that a member wrongly declared dead comes back without waiting for a
// push/pull.
func (f *MeshFleet) healthLoop(mm *meshMember) {
	defer close(mm.done)
	probe := f.cfg.ProbeInterval
	if probe == 0 {
		probe = mesh.DefaultProbeInterval
	}
	knock := time.NewTicker(5 * probe)
	defer knock.Stop()
	next := time.After(f.health/2 + rand.N(f.health))
	for {
		select {
		case <-mm.stop:
			return
		case <-next:
			mm.m.Update(fakeHealth())
			next = time.After(f.health/2 + rand.N(f.health))
		case <-knock.C:
			if a := mm.m.ReconnectTarget(); a != "" {
				mm.m.Join([]string{a})
			}
		}
	}
}

// Kill stops a member at once, with no leave message, as a crash would.
func (f *MeshFleet) Kill(name string) {
	f.mu.Lock()
	mm, ok := f.members[name]
	if ok {
		delete(f.members, name)
		for i, n := range f.order {
			if n == name {
				f.order = append(f.order[:i], f.order[i+1:]...)
				break
			}
		}
	}
	f.mu.Unlock()
	if !ok {
		return
	}
	mm.m.Shutdown()
	close(mm.stop)
	<-mm.done
}

// Live returns the running members' names, oldest first.
func (f *MeshFleet) Live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// Mesh returns a running member's mesh.
func (f *MeshFleet) Mesh(name string) *mesh.Mesh {
	f.mu.Lock()
	defer f.mu.Unlock()
	mm, ok := f.members[name]
	if !ok {
		f.t.Fatalf("mesh fleet: no running member %q", name)
	}
	return mm.m
}

// Meshes returns the meshes of the named running members.
func (f *MeshFleet) Meshes(names []string) []*mesh.Mesh {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*mesh.Mesh
	for _, n := range names {
		if mm, ok := f.members[n]; ok {
			out = append(out, mm.m)
		}
	}
	return out
}

// WaitConverged waits until every running member sees every running member
// alive.
func (f *MeshFleet) WaitConverged(timeout time.Duration) error {
	return Poll(timeout, func() error {
		live := f.Live()
		return allAlive(live, f.Meshes(live))
	})
}

// FalseOffline counts pairs (observer, member) of running members where
// the observer sees the member offline.
func (f *MeshFleet) FalseOffline() int {
	live := f.Live()
	return countNotAlive(f.Meshes(live), live)
}

// Close stops every member.
func (f *MeshFleet) Close() {
	for _, n := range f.Live() {
		f.Kill(n)
	}
}
