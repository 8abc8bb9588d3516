package node_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

func quantiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]
}

func reportLatency(b *testing.B, d []time.Duration) {
	p50, p99 := quantiles(d)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// BenchmarkJoinHandshake: from a join token to a member, p50 over 20 joins
// (pinned TLS, token check in Raft, CSR signing, keyring handed over, mesh
// joined, spec fetched over mutual TLS).
func BenchmarkJoinHandshake(b *testing.B) {
	f := testenv.NewFleet(b, testenv.Options{Gateways: 3})
	tok := f.NewToken("sensor", 0)
	var d, started []time.Duration
	for i := range 20 * b.N {
		start := time.Now()
		m, err := f.Join(testenv.Spec{Name: fmt.Sprintf("j%d", i), Role: "sensor"}, tok)
		if err != nil {
			b.Fatal(err)
		}
		started = append(started, time.Since(start))
		testenv.Eventually(b, 10*time.Second, func() error {
			if v, _, err := f.Client("gw1").Node(context.Background(), m.Name); err != nil || v.State != "ready" {
				return fmt.Errorf("%s not a ready member yet: %v", m.Name, err)
			}
			return nil
		})
		d = append(d, time.Since(start))
	}
	// joined-ms: token to a running member (certificate, keys, mesh joined,
	// spec copy); p50/p99: until the gateway lists it ready (adds gossip
	// spread and this loop's polling).
	p50, _ := quantiles(started)
	b.ReportMetric(float64(p50.Microseconds())/1000, "joined-p50-ms")
	reportLatency(b, d)
}

// BenchmarkFleetReadTLS: GET /v1/fleet on an edge over HTTPS with a viewer
// credential checked on each request, keep-alive, N nodes
// (FLEETMESH_BENCH_N, default 20).
func BenchmarkFleetReadTLS(b *testing.B) {
	n := 20
	if v, err := strconv.Atoi(os.Getenv("FLEETMESH_BENCH_N")); err == nil && v > 1 {
		n = v
	}
	var edges []testenv.Spec
	for range n - 3 {
		edges = append(edges, testenv.Spec{})
	}
	opts := testenv.Options{Gateways: 3, Edges: edges}
	if n > 30 {
		// A hundred nodes in one 2-core process: test timings make Raft
		// lose its leader under the start-up load; use calmer ones.
		opts.Tune = func(c *node.Config) {
			c.HealthInterval = 2 * time.Second
			c.Raft.HeartbeatTimeout, c.Raft.ElectionTimeout, c.Raft.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		}
	}
	f := testenv.NewFleet(b, opts)
	ctx := context.Background()
	viewer, err := f.Client("gw1").CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "viewer"})
	if err != nil {
		b.Fatal(err)
	}
	c := f.ClientWith("e1", viewer.Credential)
	testenv.Eventually(b, 10*time.Second, func() error { _, _, err := c.Fleet(ctx); return err })
	b.ResetTimer()
	var d []time.Duration
	for range 2000 * b.N {
		start := time.Now()
		if _, _, err := c.Fleet(ctx); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	reportLatency(b, d)
}
