package node_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv"
)

// BenchmarkAppConverge measures, for 10 sensors sharing this machine's
// Docker engine, the time from a deploy's commit (the API answering) until
// the new version's container runs on every matching node. Each sample
// deploys a new version (alternating two images).
func BenchmarkAppConverge(b *testing.B) {
	if err := testenv.BuildHealthImage(); err != nil {
		b.Skipf("no Docker engine: %v", err)
	}
	var edges []testenv.Spec
	for i := 1; i <= 10; i++ {
		edges = append(edges, testenv.Spec{Name: fmt.Sprintf("s%d", i), Role: "sensor"})
	}
	f := testenv.NewFleet(b, testenv.Options{Gateways: 1, Edges: edges})
	ctx := context.Background()
	const samples = 12
	var took []time.Duration
	seq := 0
	for b.Loop() {
		took = took[:0]
		for i := 0; i < samples; i++ {
			seq++
			version := fmt.Sprintf("1.0.%d", seq)
			image := testenv.HealthImageV1
			if i%2 == 1 {
				image = testenv.HealthImageV2
			}
			if _, err := f.Client("gw1").DeployApp(ctx, collector(version, image, "")); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			testenv.Eventually(b, 2*time.Minute, func() error {
				for _, e := range edges {
					cs, err := running(f, e.Name)
					if err != nil {
						return err
					}
					if len(cs) != 1 || cs[0].Labels["io.fleetmesh.version"] != version {
						return fmt.Errorf("%s not on %s yet", e.Name, version)
					}
				}
				return nil
			})
			took = append(took, time.Since(start))
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "max-ms") // 12 samples: the max stands in for p99
}
