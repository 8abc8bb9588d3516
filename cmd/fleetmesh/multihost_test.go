package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// The binary as shipped, on separate hosts: five fleetmesh agents, each a
// process in its own container of the project's FROM-scratch image with its
// own address on a bridged network, started with the operator's command
// lines and the binary's defaults (gossip on 0.0.0.0:7946, the API on port
// 7400, Raft on 7947). They converge; a power-cut sensor is offline
// everywhere; a power-cut leader is replaced and writes go on with nothing
// committed lost; both come back from their data dirs with no token. A
// gateway cut off the network misses writes and, put back, catches up.
func TestMultiHostFleetInContainers(t *testing.T) {
	if cli, err := testenv.Docker(); err != nil {
		if os.Getenv("FLEETMESH_REQUIRE_DOCKER") != "" {
			t.Fatal(err)
		}
		t.Skipf("no Docker engine: %v", err)
	} else {
		cli.Close()
	}
	f, err := testenv.NewContainerFleet(t)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.Start("gw1", "--bootstrap", "--role", "gateway", "--site", "plant-a")
	f.LoadCredentials("gw1")
	token := func(role string) string {
		t.Helper()
		var tok string
		testenv.Eventually(t, 60*time.Second, func() error {
			r, err := f.Client("gw1").CreateToken(ctx, api.TokenCreateRequest{Role: role, TTL: "1h"})
			if err != nil {
				return err
			}
			tok = r.Token
			return nil
		})
		return tok
	}
	f.Start("gw2", "--join", token("gateway"), "--role", "gateway", "--site", "plant-a")
	f.Start("gw3", "--join", token("gateway"), "--role", "gateway", "--site", "plant-b")
	f.Start("s1", "--join", token("sensor"), "--role", "sensor", "--site", "plant-a")
	f.Start("s2", "--join", token("sensor"), "--role", "sensor", "--site", "plant-b")
	all := []string{"gw1", "gw2", "gw3", "s1", "s2"}

	// Every agent's own view, through its own API at its own address.
	views := func(observers []string, check func(name string, fl *api.Fleet, nodes []api.Node) error) func() error {
		return func() error {
			for _, o := range observers {
				c := f.Client(o)
				fl, _, err := c.Fleet(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", o, err)
				}
				nodes, _, err := c.Nodes(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", o, err)
				}
				if err := check(o, fl, nodes); err != nil {
					return fmt.Errorf("%s: %w", o, err)
				}
			}
			return nil
		}
	}
	converged := func(observers []string, online int) func() error {
		return views(observers, func(_ string, fl *api.Fleet, nodes []api.Node) error {
			if fl.Online != online || fl.Leader == "" {
				return fmt.Errorf("%d online, leader %q; want %d online and a leader", fl.Online, fl.Leader, online)
			}
			for _, n := range nodes {
				if n.State != "offline" && n.API != f.API(n.Name) {
					return fmt.Errorf("%s advertises its API at %s, want %s", n.Name, n.API, f.API(n.Name))
				}
			}
			return nil
		})
	}
	testenv.Eventually(t, 90*time.Second, converged(all, 5))

	// A sensor loses power: offline on every other agent.
	f.Kill("s2")
	testenv.Eventually(t, 30*time.Second, views([]string{"gw1", "gw2", "gw3", "s1"}, func(_ string, _ *api.Fleet, nodes []api.Node) error {
		for _, n := range nodes {
			if n.Name == "s2" && n.State != "offline" {
				return fmt.Errorf("s2 is %s, want offline", n.State)
			}
		}
		return nil
	}))

	// The Raft leader loses power: another gateway leads, and a write
	// through a sensor commits; nothing committed before is lost.
	before, err := f.Client("gw2").Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fl, _, err := f.Client("gw2").Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := fl.Leader
	f.Kill(leader)
	var survivors []string
	for _, n := range all {
		if n != leader && n != "s2" {
			survivors = append(survivors, n)
		}
	}
	var written *api.TokenCreateResponse
	testenv.Eventually(t, 30*time.Second, func() error {
		written, err = f.Client("s1").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
		return err
	})
	testenv.Eventually(t, 30*time.Second, views(survivors, func(_ string, fl *api.Fleet, _ []api.Node) error {
		if fl.Leader == "" || fl.Leader == leader {
			return fmt.Errorf("leader %q, want one of the survivors", fl.Leader)
		}
		return nil
	}))
	var after []api.TokenInfo
	if _, err := f.Client(survivors[0]).Do(ctx, "GET", "/v1/tokens?consistent", nil, &after); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, tk := range after {
		ids[tk.ID] = true
	}
	for _, tk := range before {
		if !ids[tk.ID] {
			t.Errorf("token %s, committed before the leader died, is gone", tk.ID)
		}
	}
	if !ids[written.ID] {
		t.Errorf("the token written after the failover is not listed")
	}

	// Both come back from their data dirs (their command lines still
	// carry the old tokens and --bootstrap: ignored once a membership is
	// stored, so no token is used again).
	used := func() map[string]int {
		t.Helper()
		var toks []api.TokenInfo
		if _, err := f.Client(survivors[0]).Do(ctx, "GET", "/v1/tokens?consistent", nil, &toks); err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, tk := range toks {
			m[tk.ID] = tk.Used
		}
		return m
	}
	usedBefore := used()
	f.Restart(leader)
	f.Restart("s2")
	testenv.Eventually(t, 90*time.Second, converged(all, 5))
	if got := used(); !maps.Equal(got, usedBefore) {
		t.Errorf("token uses changed by the restarts: %v, before %v", got, usedBefore)
	}

	// A gateway cut off the network: the others write without it; back on
	// the network, it is online everywhere again and holds the write made
	// meanwhile.
	f.Disconnect("gw3")
	var rest []string
	for _, n := range all {
		if n != "gw3" {
			rest = append(rest, n)
		}
	}
	testenv.Eventually(t, 30*time.Second, views(rest, func(_ string, fl *api.Fleet, _ []api.Node) error {
		if fl.Online != 4 {
			return fmt.Errorf("%d online, want 4 (gw3 cut off)", fl.Online)
		}
		return nil
	}))
	var missed *api.TokenCreateResponse
	testenv.Eventually(t, 30*time.Second, func() error {
		missed, err = f.Client("gw1").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
		return err
	})
	f.Reconnect("gw3")
	testenv.Eventually(t, 90*time.Second, converged(all, 5))
	testenv.Eventually(t, 30*time.Second, func() error {
		toks, err := f.Client("gw3").Tokens(ctx)
		if err != nil {
			return err
		}
		for _, tk := range toks {
			if tk.ID == missed.ID {
				return nil
			}
		}
		return fmt.Errorf("gw3 does not hold the token written while it was cut off")
	})
}
