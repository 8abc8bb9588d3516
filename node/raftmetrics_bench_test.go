package node_test

import (
	"fmt"
	"os"
	"sort"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// raftMetrics collects hashicorp/raft's own timings (commit time, dispatch,
// replication, fsync of the log) when FLEETMESH_BENCH_RAFT_METRICS is set;
// BenchmarkRaft prints them (mean and max per metric, in ms) at its end.
// They show where a write's time goes inside Raft.
var raftMetrics *metrics.InmemSink

func init() {
	if os.Getenv("FLEETMESH_BENCH_RAFT_METRICS") == "" {
		return
	}
	raftMetrics = metrics.NewInmemSink(time.Hour, time.Hour)
	cfg := metrics.DefaultConfig("fleetmesh")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	metrics.NewGlobal(cfg, raftMetrics)
}

func printRaftMetrics() {
	if raftMetrics == nil {
		return
	}
	for _, iv := range raftMetrics.Data() {
		var ks []string
		for k := range iv.Samples {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			s := iv.Samples[k]
			fmt.Printf("%-60s n=%d mean=%.3f max=%.3f\n", k, s.Count, s.Sum/float64(max(1, s.Count)), s.Max)
		}
	}
}
