package mesh_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// benchTimings returns the mesh timings a benchmark runs with: the
// defaults, or FLEETMESH_BENCH_MESH, such as
// "probe=100ms,timeout=50ms,suspicion=3,suspicion-max=4,gossip=50ms,floor=600ms", to
// compare candidate defaults.
func benchTimings(b *testing.B) mesh.Config {
	var c mesh.Config
	v := os.Getenv("FLEETMESH_BENCH_MESH")
	if v == "" {
		return c
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "probe":
			c.ProbeInterval, err = time.ParseDuration(val)
		case "timeout":
			c.ProbeTimeout, err = time.ParseDuration(val)
		case "gossip":
			c.GossipInterval, err = time.ParseDuration(val)
		case "suspicion":
			c.SuspicionMult, err = strconv.Atoi(val)
		case "floor":
			c.SuspicionFloor, err = time.ParseDuration(val)
		case "suspicion-max":
			c.SuspicionMaxTimeoutMult, err = strconv.Atoi(val)
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			b.Fatalf("FLEETMESH_BENCH_MESH: %v", err)
		}
	}
	b.Logf("mesh timings from FLEETMESH_BENCH_MESH: %s", v)
	return c
}

// BenchmarkDetection measures failure detection in the mesh layer alone:
// bare gossip members with the product's default timings (mesh.Default*)
// and a node-sized health record gossiped every node.DefaultHealthInterval.
// Each sample hard-kills a random member and measures until every other
// member's view says it is offline (first: until the first one does); then
// a fresh member replaces it, so N stays the same. Whole agents are measured
// by node's BenchmarkDetection.
func BenchmarkDetection(b *testing.B) {
	for _, n := range []int{20, 100} {
		b.Run(fmt.Sprintf("mesh/N=%d", n), func(b *testing.B) {
			benchMeshDetection(b, n, testenv.BenchSamples(15))
		})
	}
}

func benchMeshDetection(b *testing.B, n, samples int) {
	health, _ := time.ParseDuration(os.Getenv("FLEETMESH_BENCH_HEALTH"))
	f := testenv.NewMeshFleet(b, n, benchTimings(b), health)
	b.ResetTimer()
	var first, all testenv.Samples
	watch := testenv.WatchOffline(50*time.Millisecond, f.FalseOffline)
	for range samples {
		live := f.Live()
		victim := live[rand.IntN(len(live))]
		var others []string
		for _, name := range live {
			if name != victim {
				others = append(others, name)
			}
		}
		d, err := testenv.MeasureDetection(func() { f.Kill(victim) }, victim, f.Meshes(others), 30*time.Second)
		if err != nil {
			b.Fatalf("kill %s: %v", victim, err)
		}
		first, all = append(first, d.First), append(all, d.All)
		if _, err := f.Add(); err != nil {
			b.Fatal(err)
		}
		if err := f.WaitConverged(time.Minute); err != nil {
			b.Fatalf("after replacing %s: %v", victim, err)
		}
	}
	b.StopTimer()
	watch.Stop()
	all.Report(b, "")
	first.Report(b, "first")
	reportFalseOffline(b, watch)
}

// reportFalseOffline reports how many of the watch's polls saw a running
// member offline somewhere (a false positive of failure detection).
func reportFalseOffline(b *testing.B, w *testenv.OfflineWatch) {
	b.Helper()
	b.ReportMetric(float64(w.BadPolls), "false-offline-polls")
	if w.BadPolls > 0 {
		b.Logf("FALSE OFFLINE: %d of %d polls saw a running member offline (%d observer/member pairs in all)", w.BadPolls, w.Polls, w.Pairs)
	}
}
