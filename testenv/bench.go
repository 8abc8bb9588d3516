package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// BenchSamples is how many samples a benchmark takes: def, or
// FLEETMESH_BENCH_SAMPLES when set.
func BenchSamples(def int) int {
	if v, err := strconv.Atoi(os.Getenv("FLEETMESH_BENCH_SAMPLES")); err == nil && v > 0 {
		return v
	}
	return def
}

// ProductTimings undoes TestTimings: the node runs with the product's
// default mesh, Raft and health timings (mesh.Default*, consensus.Default*,
// node.DefaultHealthInterval). Benchmarks pass it as Options.Tune, since
// what they measure is what a deployed fleet gets.
func ProductTimings(c *node.Config) {
	c.HealthInterval = 0
	c.Mesh = mesh.Config{}      // the node fills all but the timings
	c.Raft = consensus.Config{} // likewise
}

// JoinEdges starts the given non-gateway nodes, parallel at a time, each
// joining with a token of its role. Large fleets start much faster this way
// than one by one as NewFleet does. A join that fails (say, while the Raft
// leader changes) is retried until timeout.
func (f *Fleet) JoinEdges(specs []Spec, parallel int, timeout time.Duration) error {
	if parallel < 1 {
		parallel = 1
	}
	roles := []string{"sensor", "compute", "storage", "hybrid"}
	tokens := map[string]string{}
	for i := range specs {
		s := &specs[i]
		if s.Role == "" {
			s.Role = roles[i%len(roles)]
		}
		if s.Site == "" {
			s.Site = []string{"site-a", "site-b"}[i%2]
		}
		if tokens[s.Role] == "" {
			tokens[s.Role] = f.NewToken(s.Role, 0)
		}
	}
	deadline := time.Now().Add(timeout)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var logged atomic.Int32
	for i, s := range specs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for try := 1; ; try++ {
				_, err := f.Join(s, tokens[s.Role])
				if err == nil {
					return
				}
				if strings.Contains(err.Error(), "already in the fleet") {
					// An earlier try committed but did not answer: the
					// name is taken by a device that never started.
					s.Name = fmt.Sprintf("%s-%d", specs[i].Name, try)
				}
				if logged.Add(1) <= 5 {
					f.t.Logf("join %s failed (will retry): %v", s.Name, err)
				}
				if time.Now().After(deadline) {
					mu.Lock()
					errs = append(errs, fmt.Errorf("join %s: %w", s.Name, err))
					mu.Unlock()
					return
				}
				<-time.After(100 * time.Millisecond) // back off before the retry
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Meshes returns the gossip memberships of the named running nodes.
func (f *Fleet) Meshes(names []string) []*mesh.Mesh {
	var out []*mesh.Mesh
	for _, n := range names {
		if nd := f.running(n); nd != nil {
			out = append(out, nd.Mesh())
		}
	}
	return out
}

// WaitMeshConverged waits until every running node's gossip view holds
// every running node alive. It reads the mesh directly, which is far
// cheaper than WaitConverged's API calls in large fleets.
func (f *Fleet) WaitMeshConverged(timeout time.Duration) error {
	return Poll(timeout, func() error {
		live := f.Live()
		return allAlive(live, f.Meshes(live))
	})
}

// allAlive checks that each of the named observers sees all of them alive.
// Its error counts the pairs that do not and describes the first.
func allAlive(names []string, observers []*mesh.Mesh) error {
	bad, targets := 0, map[string]int{}
	var first error
	for i, o := range observers {
		for _, n := range names {
			if alive, _ := o.Alive(n); alive {
				continue
			}
			bad++
			targets[n]++
			if first != nil {
				continue
			}
			m, ok := o.Member(n)
			if !ok {
				first = fmt.Errorf("%s does not know %s", names[i], n)
				continue
			}
			first = fmt.Errorf("%s sees %s offline (%q, gossip %q)", names[i], n, m.OfflineReason, m.Gossip)
		}
	}
	if bad == 0 {
		return nil
	}
	who := ""
	if len(targets) <= 10 {
		who = fmt.Sprintf(" %v", targets)
	}
	return fmt.Errorf("%d of %d nodes seen offline by someone%s, %d pairs in all; first: %w", len(targets), len(names), who, bad, first)
}

// Detection is one measured failure detection.
type Detection struct {
	// First is from the kill until the first observer saw the victim
	// offline; All until every observer did.
	First, All time.Duration
}

// MeasureDetection calls kill, then polls every observer's gossip view
// (not the API, so that it measures detection rather than polling) until
// each says victim is offline. It returns how long that took, or an error
// naming how many observers still saw the victim alive at timeout.
func MeasureDetection(kill func(), victim string, observers []*mesh.Mesh, timeout time.Duration) (Detection, error) {
	seen := make([]bool, len(observers))
	left := len(observers)
	start := time.Now()
	kill()
	var d Detection
	deadline := start.Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for left > 0 {
		for i, o := range observers {
			if seen[i] {
				continue
			}
			if alive, known := o.Alive(victim); known && !alive {
				seen[i] = true
				left--
				if d.First == 0 {
					d.First = time.Since(start)
				}
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("after %v, %d of %d observers still see %s alive", timeout, left, len(observers), victim)
		}
		<-tick.C
	}
	d.All = time.Since(start)
	return d, nil
}

// FalseOffline counts pairs (observer, member) where a running node sees a
// running node offline: any such pair is a false positive of failure
// detection.
func (f *Fleet) FalseOffline() int {
	live := f.Live()
	return countNotAlive(f.Meshes(live), live)
}

func countNotAlive(observers []*mesh.Mesh, names []string) int {
	bad := 0
	for _, o := range observers {
		for _, n := range names {
			if alive, known := o.Alive(n); known && !alive {
				bad++
			}
		}
	}
	return bad
}

// WriteLatencies sends n token creations through c, one after another, and
// returns each one's latency.
func WriteLatencies(ctx context.Context, c *api.Client, n int) (Samples, error) {
	out := make(Samples, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := c.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"}); err != nil {
			return out, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// OfflineWatch polls a false-offline count in the background (see
// Fleet.FalseOffline and MeshFleet.FalseOffline), so that a benchmark sees
// false positives that come and go between its own checks.
type OfflineWatch struct {
	stop chan struct{}
	done chan struct{}
	// Polls is how many times the count was taken; BadPolls how many of
	// those saw a running node offline somewhere; Pairs the sum of the
	// counts (observer, member) over all polls.
	Polls, BadPolls, Pairs int
}

// WatchOffline starts polling count every interval until Stop.
func WatchOffline(every time.Duration, count func() int) *OfflineWatch {
	w := &OfflineWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			c := count()
			w.Polls++
			w.Pairs += c
			if c > 0 {
				w.BadPolls++
			}
		}
	}()
	return w
}

// Stop ends the watch; its counts are final once Stop returns.
func (w *OfflineWatch) Stop() *OfflineWatch {
	close(w.stop)
	<-w.done
	return w
}
