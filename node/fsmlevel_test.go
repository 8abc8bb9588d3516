package node_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// A gateway rolled back to a binary older than a command already in the
// fleet's Raft log stops applying the log at that command, rather than skip
// it and keep a spec that differs from the others' at the same version: it
// reports itself in error, saying why, everywhere; it does not stay leader;
// the fleet keeps writing. A gateway that old is refused a Raft seat at
// join. Upgraded again, the rolled-back one catches up and agrees.
func TestRolledBackGatewayHaltsRatherThanParts(t *testing.T) {
	var skew atomic.Int64
	var gw3Old atomic.Bool
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Log: logTo(logs), Tune: func(c *node.Config) {
		c.Now = clock
		c.OldFSM = c.Name == "gw4" || (c.Name == "gw3" && gw3Old.Load())
	}})
	ctx := context.Background()
	short, err := f.Client(f.Leader()).CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	tokensOn := func(name string) (map[string]bool, error) {
		ts, err := f.Client(name).Tokens(ctx)
		m := map[string]bool{}
		for _, tk := range ts {
			m[tk.ID] = true
		}
		return m, err
	}
	// A prune (a command of FSM level 1) goes into the log.
	skew.Store(int64(time.Hour + consensus.TokenRetention + 2*time.Minute))
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, n := range []string{"gw1", "gw2", "gw3"} {
			if m, err := tokensOn(n); err != nil || m[short.ID] {
				return errorf("%s: the expired token is still there (%v)", n, err)
			}
		}
		return nil
	})

	// gw3 rolled back to a binary one level older.
	gw3Old.Store(true)
	f.Stop("gw3")
	f.Restart("gw3")
	testenv.Eventually(t, 20*time.Second, func() error {
		v, _, err := f.Client("gw1").Node(ctx, "gw3")
		if err != nil {
			return err
		}
		if v.State != "error" || !strings.Contains(v.Message, "too old") || !strings.Contains(v.Message, "prune_tokens") {
			return errorf("gw1 sees gw3 as %s (%q), want error naming the command it cannot apply", v.State, v.Message)
		}
		fl, _, err := f.Client("gw2").Fleet(ctx)
		if err != nil {
			return err
		}
		if !strings.Contains(strings.Join(fl.Alerts, "\n"), "gw3 is in error") {
			return errorf("gw2's fleet alerts do not name gw3: %q", fl.Alerts)
		}
		return nil
	})
	// Stale, never different: gw3's spec stops before the prune.
	if m, err := tokensOn("gw3"); err != nil || !m[short.ID] {
		t.Errorf("gw3's tokens after the rollback: %v (%v); want its spec to stop before the prune, with the token", m, err)
	}
	// Its log is whole, so Raft may make it leader: it hands on.
	testenv.Eventually(t, 30*time.Second, func() error {
		if logged(logs, "gw3", "handed Raft leadership on") {
			return nil
		}
		if l := f.Leader(); l != "" && l != "gw3" {
			f.Member(l).Node.Store().TransferLeadershipTo("gw3")
		}
		return errorf("gw3 has not led and handed on yet")
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		if l := f.Leader(); l == "" || l == "gw3" {
			return errorf("leader %q: want gw1 or gw2 (a halted gateway hands leadership on)", l)
		}
		return nil
	})
	if _, err := f.Client("gw1").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"}); err != nil {
		t.Fatalf("a write while gw3 is halted: %v", err)
	}

	// A new gateway with the old binary does not get a seat.
	_, err = f.Join(testenv.Spec{Name: "gw4", Role: "gateway", Site: "site-a"}, f.NewToken("gateway", 0))
	if !errors.Is(err, node.ErrJoinRefused) || !strings.Contains(err.Error(), "FSM level 0") {
		t.Errorf("old gateway join: %v, want a refusal naming its FSM level", err)
	}
	if servers, err := f.Member(f.Leader()).Node.Store().Servers(); err != nil || len(servers) != 3 {
		t.Errorf("Raft servers after the refused gateway: %v (%v), want 3", servers, err)
	}

	// gw3 upgraded again: it applies the rest of its log and agrees.
	gw3Old.Store(false)
	f.Stop("gw3")
	f.Restart("gw3")
	testenv.Eventually(t, 20*time.Second, func() error {
		v, _, err := f.Client("gw1").Node(ctx, "gw3")
		if err != nil {
			return err
		}
		want := f.Member("gw1").Node.Store().Version()
		if v.State != "ready" || v.SpecVersion != want {
			return errorf("gw1 sees gw3 %s at spec %d, want ready at %d", v.State, v.SpecVersion, want)
		}
		if m, err := tokensOn("gw3"); err != nil || m[short.ID] {
			return errorf("gw3 still holds the pruned token (%v)", err)
		}
		return nil
	})
}
