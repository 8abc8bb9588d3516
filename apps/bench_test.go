package apps

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkConvergeTenNodes measures, for 10 nodes sharing this machine's
// engine, the time from SetDesired (a new version of one app) until the
// new container runs on the node. It reports p50 and p99 over all nodes
// and iterations. The spec commit and its gossip are the node agent's and
// come on top.
func BenchmarkConvergeTenNodes(b *testing.B) {
	if dockerErr != nil {
		b.Skip(dockerErr)
	}
	const nodes = 10
	ns := make([]*Reconciler, nodes)
	names := make([]string, nodes)
	for i := range ns {
		names[i] = fmt.Sprintf("b%s-%d", randomSuffix(), i)
		drv, err := NewDockerDriver(DockerConfig{Client: dockerCli, Node: names[i], NamePrefix: names[i] + "-", PullTimeout: 5 * time.Second, StopTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		ns[i], err = NewReconciler(ReconcilerConfig{
			Node:    NodeInfo{Name: names[i], Role: "sensor"},
			Drivers: map[DeploymentType]Driver{TypeContainer: drv},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for _, n := range names {
			removeNodeContainers(b, dockerCli, n)
		}
	})
	var samples []time.Duration
	var mu sync.Mutex
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		doc := fmt.Sprintf("apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: bench, version: \"%d\"}\nspec:\n  selector: {role: sensor}\n  deployment: {type: container, image: %s}\n", i, []string{testImage1, testImage2}[i%2])
		m, err := ParseAndValidate([]byte(doc), ValidateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, r := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				if err := r.SetDesired(Desired{Index: uint64(i + 1), Apps: []*Manifest{m}}); err != nil {
					b.Error(err)
					return
				}
				if err := r.Reconcile(context.Background()); err != nil {
					b.Error(err)
					return
				}
				if st := r.Status()["bench"]; st.State != StateRunning || st.Version != fmt.Sprint(i) {
					b.Errorf("status %+v", st)
					return
				}
				mu.Lock()
				samples = append(samples, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) > 0 {
		pct := func(p float64) time.Duration { return samples[min(len(samples)-1, int(p*float64(len(samples))))] }
		b.ReportMetric(float64(pct(0.50).Milliseconds()), "p50-ms")
		b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
	}
}
