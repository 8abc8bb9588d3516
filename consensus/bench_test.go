package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv/wait"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// BenchmarkDiskFloor measures the part of a Raft write that belongs to the
// disk, with nothing of Raft, the network or the API: three log stores
// opened as the Store opens them, in the benchmark's temp dir (the disk the
// node benchmarks' gateways share); each round appends one token-create
// entry to the "leader", then to both "followers" at once, as hashicorp/raft
// does (the leader stores before it replicates). floor-p50 is the leader's
// commit plus the first follower's: no write through Raft on this disk can
// be faster, so BenchmarkRaft's write-1 minus this is fleetmesh's own cost.
// FLEETMESH_BENCH_ENTRY_BYTES sets another entry size: bbolt writes more
// pages per commit for larger entries (deeper tree, more splits). Like every
// benchmark here it takes its own samples: run it with -benchtime 1x, as
// `make bench` does (ns/op means nothing).
func BenchmarkDiskFloor(b *testing.B) {
	var stores [3]*raftboltdb.BoltStore
	for i := range stores {
		s, err := openLogStore(filepath.Join(b.TempDir(), "raft.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	data, err := json.Marshal(tokenCommand("0123456789abcdef"))
	if v := os.Getenv("FLEETMESH_BENCH_ENTRY_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("FLEETMESH_BENCH_ENTRY_BYTES: %q is not a positive number", v)
		}
		data = make([]byte, n)
	}
	if err != nil {
		b.Fatal(err)
	}
	rounds := 2000
	var leader, follower, floor []time.Duration
	b.ResetTimer()
	for i := 1; i <= rounds; i++ {
		logs := []*raft.Log{{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}}
		t0 := time.Now()
		if err := stores[0].StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		done := make(chan error, 2)
		for _, s := range stores[1:] {
			go func() { done <- s.StoreLogs(logs) }()
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		first := time.Since(t1)
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		leader, follower, floor = append(leader, t1.Sub(t0)), append(follower, first), append(floor, t1.Sub(t0)+first)
	}
	for _, m := range []struct {
		name string
		s    []time.Duration
	}{{"leader", leader}, {"follower", follower}, {"floor", floor}} {
		slices.Sort(m.s)
		b.ReportMetric(float64(m.s[len(m.s)/2].Microseconds())/1000, m.name+"-p50-ms")
	}
	slices.Sort(floor)
	b.ReportMetric(float64(floor[len(floor)*99/100].Microseconds())/1000, "floor-p99-ms")
	b.Logf("%d entries of %d bytes", rounds, len(data))
}

// BenchmarkApply measures one writer's Store.Apply on a three-gateway group
// in one process (real Raft over mutual TLS on loopback, raft.db in temp
// dirs on one disk): the Raft share of a write, without HTTP or the rest of
// a node. Compare with BenchmarkDiskFloor (the disk's share) and the node
// package's BenchmarkRaft/write-1 (the whole API path). Run with
// -benchtime 1x.
func BenchmarkApply(b *testing.B) {
	srv, cli := testTLS(b)
	var stores []*Store
	for i := range 3 {
		s, err := Open(Config{NodeID: fmt.Sprintf("n%d", i+1), Dir: b.TempDir(), Bind: "127.0.0.1:0", ServerTLS: srv, ClientTLS: cli, Bootstrap: i == 0})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	wait.Eventually(b, 10*time.Second, func() error {
		if !stores[0].IsLeader() {
			return errors.New("n1 is not leader yet")
		}
		return nil
	})
	ctx := context.Background()
	if _, err := stores[0].Apply(ctx, initCmd()); err != nil {
		b.Fatal(err)
	}
	for _, s := range stores[1:] {
		if _, err := stores[0].AddGateway(s.cfg.NodeID, s.Addr()); err != nil {
			b.Fatal(err)
		}
	}
	write := func(i int) time.Duration {
		t0 := time.Now()
		if _, err := stores[0].Apply(ctx, tokenCommand(fmt.Sprintf("%016x", i))); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for i := range 50 {
		write(-i - 1)
	}
	var ds []time.Duration
	for i := range 1000 {
		ds = append(ds, write(i))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-ms")
}

// tokenCommand is a token creation as the API makes it, audit entry and all.
func tokenCommand(id string) *Command {
	now := time.Now().UTC()
	return &Command{Op: OpCreateToken, Time: now,
		Token: &JoinToken{ID: id, Hash: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Role: "sensor", Created: now, Expires: now.Add(time.Hour)},
		Audit: &AuditEntry{OperatorID: "op-0123456789", OperatorName: "admin", Role: "admin", Method: "POST", Path: "/v1/tokens",
			Summary: "created join token " + id + " for role sensor, ttl 1h0m0s, uses 0", Remote: "127.0.0.1:40000", Via: "gw1"}}
}
