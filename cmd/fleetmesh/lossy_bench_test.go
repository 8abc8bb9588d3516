package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// loosened are the timings the README suggests for sites on slow or lossy
// links.
const loosened = `timings:
  probe_interval: 500ms
  probe_timeout: 250ms
  suspicion_floor: 3s
  raft_heartbeat_timeout: 1s
  raft_election_timeout: 1s
  raft_leader_lease_timeout: 1s
`

// BenchmarkLossyLinks runs five whole agents, each in its own container
// (testenv.ContainerFleet: 3 gateways on two sites, 2 sensors), with
// everything every agent sends dropped at random or rate-limited as on a
// lossy or slow site link, once with the binary's default timings and once with the README's
// loosened ones. It measures what an operator would see over a soak
// (FLEETMESH_BENCH_SOAK, default 30s) with every agent running: false
// offline verdicts, Raft leader changes (election churn), and writes
// through an edge's API (one every 100 ms) that fail or are slow; then how
// long a power-cut sensor takes to be offline on every other agent, and a
// power-cut leader to be replaced (a write through a survivor commits).
// FLEETMESH_BENCH_LOSSY picks one scenario by name.
func BenchmarkLossyLinks(b *testing.B) {
	if _, err := testenv.Docker(); err != nil {
		b.Skipf("no Docker engine: %v", err)
	}
	scenarios := []shaping{
		{name: "lan"},
		{name: "loss-5pct", loss: 5},
		{name: "loss-15pct", loss: 15},
		{name: "rate-512kbit", kbit: 512},
	}
	soak := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("FLEETMESH_BENCH_SOAK")); err == nil && d > 0 {
		soak = d
	}
	for _, sc := range scenarios {
		if only := os.Getenv("FLEETMESH_BENCH_LOSSY"); only != "" && only != sc.name {
			continue
		}
		for _, prof := range []struct{ name, yaml string }{{"defaults", ""}, {"loosened", loosened}} {
			b.Run(sc.name+"/"+prof.name, func(b *testing.B) { benchLossy(b, sc, prof.yaml, soak) })
		}
	}
}

// shaping is a site link: loss percent of packets dropped, or a rate limit
// in kbit/s (0: none).
type shaping struct {
	name       string
	loss, kbit int
}

func benchLossy(b *testing.B, sh shaping, timings string, soak time.Duration) {
	f, err := testenv.NewContainerFleet(b)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var files map[string][]byte
	var cfg []string
	if timings != "" {
		files, cfg = map[string][]byte{"agent.yaml": []byte(timings)}, []string{"--config", "/data/agent.yaml"}
	}
	start := func(name string, args ...string) { f.StartWith(name, files, append(cfg, args...)...) }
	start("gw1", "--bootstrap", "--role", "gateway", "--site", "a")
	f.LoadCredentials("gw1")
	token := func(role string) string {
		var tok string
		testenv.Eventually(b, 60*time.Second, func() error {
			r, err := f.Client("gw1").CreateToken(ctx, api.TokenCreateRequest{Role: role, TTL: "1h"})
			if err == nil {
				tok = r.Token
			}
			return err
		})
		return tok
	}
	start("gw2", "--join", token("gateway"), "--role", "gateway", "--site", "a")
	start("gw3", "--join", token("gateway"), "--role", "gateway", "--site", "b")
	start("s1", "--join", token("sensor"), "--role", "sensor", "--site", "a")
	start("s2", "--join", token("sensor"), "--role", "sensor", "--site", "b")
	all := []string{"gw1", "gw2", "gw3", "s1", "s2"}
	clients := map[string]*api.Client{}
	for _, n := range all {
		clients[n] = f.Client(n)
	}
	converged := func() error {
		for _, n := range all {
			fl, _, err := clients[n].Fleet(ctx)
			if err != nil {
				return err
			}
			if fl.Online != len(all) || fl.Leader == "" {
				return fmt.Errorf("%s: %d online, leader %q", n, fl.Online, fl.Leader)
			}
		}
		return nil
	}
	testenv.Eventually(b, 2*time.Minute, converged)
	shape := func(name string) error {
		if err := f.Loss(name, sh.loss); err != nil {
			return err
		}
		return f.Rate(name, sh.kbit)
	}
	for _, n := range all {
		if err := shape(n); err != nil {
			b.Fatal(err)
		}
	}

	// Candidacies, from the gateways' own logs: raft logs "entering
	// candidate state" at each round it stands (pre-vote included).
	candidacies := func() int {
		n := 0
		for _, g := range []string{"gw1", "gw2", "gw3"} {
			n += strings.Count(f.Logs(g), "entering candidate state")
		}
		return n
	}
	candidacies0 := candidacies()

	// The soak: every agent's view polled, writes through s1.
	var polls, falseOffline, pollErrs, leaderChanges int
	lastLeader := ""
	var writes testenv.Samples
	var writeFail atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var mine testenv.Samples
		defer func() { writes = mine }()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			t0 := time.Now()
			_, err := clients["s1"].CreateToken(wctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
			cancel()
			if err != nil {
				writeFail.Add(1)
				continue
			}
			mine = append(mine, time.Since(t0))
		}
	}()
	end := time.Now().Add(soak)
	for time.Now().Before(end) {
		for _, o := range all {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			nodes, _, err := clients[o].Nodes(pctx)
			var fl *api.Fleet
			if err == nil && o == "gw1" {
				fl, _, err = clients[o].Fleet(pctx)
			}
			cancel()
			polls++
			if err != nil {
				pollErrs++
				continue
			}
			for _, n := range nodes {
				if n.State == "offline" {
					falseOffline++
				}
			}
			if fl != nil && fl.Leader != "" && fl.Leader != lastLeader {
				if lastLeader != "" {
					leaderChanges++
				}
				lastLeader = fl.Leader
			}
		}
		<-time.After(250 * time.Millisecond) // the soak's pace
	}
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(falseOffline), "false-offline")
	b.ReportMetric(float64(leaderChanges), "leader-changes")
	b.ReportMetric(float64(candidacies()-candidacies0), "candidacies")
	b.ReportMetric(float64(writeFail.Load()), "write-failures")
	writes.Report(b, "write")
	b.Logf("soak %v: %d polls (%d unanswered), %d false offline verdicts, %d leader changes seen by gw1, %d writes ok, %d failed",
		soak, polls, pollErrs, falseOffline, leaderChanges, len(writes), writeFail.Load())

	// Detection: s2 loses power, three times.
	var detect testenv.Samples
	others := []string{"gw1", "gw2", "gw3", "s1"}
	for range 3 {
		t0 := time.Now()
		f.Kill("s2")
		testenv.Eventually(b, time.Minute, func() error {
			for _, o := range others {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				v, _, err := clients[o].Node(pctx, "s2")
				cancel()
				if err != nil {
					return err
				}
				if v.State != "offline" {
					return fmt.Errorf("%s sees s2 %s", o, v.State)
				}
			}
			return nil
		})
		detect = append(detect, time.Since(t0))
		f.Restart("s2")
		testenv.Eventually(b, 30*time.Second, func() error { return shape("s2") })
		testenv.Eventually(b, 2*time.Minute, converged)
	}
	detect.Report(b, "detect")

	// Failover: the Raft leader loses power, twice; until a write through
	// a surviving gateway commits (a write waits up to 2 s for a leader,
	// so one that fails is tried again at once). The time includes the
	// Docker API's kill.
	var failover testenv.Samples
	for range 2 {
		fl, _, err := clients["s1"].Fleet(ctx)
		if err != nil || fl.Leader == "" {
			b.Fatalf("no leader known before the kill: %v", err)
		}
		leader := fl.Leader
		survivor := "gw1"
		if leader == "gw1" {
			survivor = "gw2"
		}
		t0 := time.Now()
		f.Kill(leader)
		for {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := clients[survivor].CreateToken(wctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
			cancel()
			if err == nil {
				break
			}
			if time.Since(t0) > 2*time.Minute {
				b.Fatalf("no write through %s within 2 minutes of killing the leader %s: %v", survivor, leader, err)
			}
		}
		failover = append(failover, time.Since(t0))
		f.Restart(leader)
		testenv.Eventually(b, 30*time.Second, func() error { return shape(leader) })
		testenv.Eventually(b, 2*time.Minute, converged)
	}
	failover.Report(b, "failover")
}
