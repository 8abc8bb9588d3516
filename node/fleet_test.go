package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

func fiveEdges() []testenv.Spec {
	return []testenv.Spec{{Role: "sensor"}, {Role: "sensor"}, {Role: "compute"}, {Role: "storage"}, {Role: "hybrid"}}
}

// 1. A fleet of 3 gateways and 5 other nodes converges: every node's
// /v1/fleet says 8 online.
func TestFleetConverges(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: fiveEdges()})
	for _, n := range f.Names() {
		fv, meta, err := f.FleetView(n)
		if err != nil {
			t.Fatal(err)
		}
		if fv.Total != 8 || fv.Online != 8 || fv.Offline != 0 {
			t.Errorf("%s: total=%d online=%d offline=%d, want 8/8/0", n, fv.Total, fv.Online, fv.Offline)
		}
		if fv.Leader == "" || !meta.KnownLeader {
			t.Errorf("%s: no leader known", n)
		}
		if fv.ByRole["gateway"] != 3 || fv.ByRole["sensor"] != 2 {
			t.Errorf("%s: by role %v", n, fv.ByRole)
		}
		if fv.BySite["site-a"]+fv.BySite["site-b"] != 8 {
			t.Errorf("%s: by site %v", n, fv.BySite)
		}
	}
	// Every node's spec copy catches up with the gateways.
	want := f.Member("gw1").Node.Store().Version()
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, n := range f.Names() {
			v, _, err := f.Client(n).Node(context.Background(), n)
			if err != nil {
				return err
			}
			if v.SpecVersion < want {
				return errorf("%s at spec %d, want >= %d", n, v.SpecVersion, want)
			}
		}
		return nil
	})
}

// 2. A killed non-gateway node is offline on every surviving node.
func TestKilledEdgeGoesOfflineEverywhere(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: fiveEdges()})
	f.Kill("e3")
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, n := range f.Live() {
			st, err := f.NodeState(n, "e3")
			if err != nil {
				return err
			}
			if st != "offline" {
				return errorf("%s sees e3 as %s", n, st)
			}
			fv, _, err := f.FleetView(n)
			if err != nil {
				return err
			}
			if fv.Online != 7 || fv.Offline != 1 {
				return errorf("%s: online=%d offline=%d", n, fv.Online, fv.Offline)
			}
		}
		return nil
	})
	v, _, err := f.Client("gw1").Node(context.Background(), "e3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.OfflineReason, "failed") {
		t.Errorf("offline reason %q, want failed...", v.OfflineReason)
	}
}

// A node that leaves gracefully is offline everywhere with its reason.
func TestGracefulLeaveCarriesReason(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{}, {}}})
	f.Stop("e1")
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, n := range f.Live() {
			v, _, err := f.Client(n).Node(context.Background(), "e1")
			if err != nil {
				return err
			}
			if v.State != "offline" || v.OfflineReason != "left: shutdown" {
				return errorf("%s sees e1 %s (%q)", n, v.State, v.OfflineReason)
			}
		}
		return nil
	})
}

// 3. Killing the Raft leader: a new leader is elected and a write through
// any surviving node succeeds; nothing committed before the kill is lost.
func TestLeaderKillFailover(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: fiveEdges()})
	ctx := context.Background()
	var before []string
	for i := 0; i < 5; i++ {
		r, err := f.Client("e1").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, r.ID)
	}
	old := f.Leader()
	if old == "" {
		t.Fatal("no leader")
	}
	f.Kill(old)
	testenv.Eventually(t, 15*time.Second, func() error {
		if l := f.Leader(); l == "" || l == old {
			return errorf("no new leader yet (have %q)", l)
		}
		return nil
	})
	for _, n := range f.Live() {
		testenv.Eventually(t, 15*time.Second, func() error {
			_, err := f.Client(n).CreateToken(ctx, api.TokenCreateRequest{Role: "compute"})
			return err
		})
	}
	// Linearizable read through an edge: every token from before is there.
	var toks []api.TokenInfo
	if _, err := f.Client("e2").Do(ctx, "GET", "/v1/tokens?consistent", nil, &toks); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, tk := range toks {
		have[tk.ID] = true
	}
	for _, id := range before {
		if !have[id] {
			t.Errorf("token %s committed before the kill is lost", id)
		}
	}
	// The surviving gateways count the change of leader, and the new
	// leader its election, for an operator's alerts.
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		if g == old {
			continue
		}
		rc := f.Member(g).Node.Store().Counters()
		text, err := metricsText(f, g)
		if err != nil {
			t.Fatal(err)
		}
		var onMetrics float64
		fmt.Sscanf(grepLine(text, "fleetmesh_raft_leader_changes_total "), "fleetmesh_raft_leader_changes_total %g", &onMetrics)
		if rc.LeaderChanges < 1 || onMetrics < 1 {
			t.Errorf("%s: %d leader changes counted, %g on /metrics; want at least 1", g, rc.LeaderChanges, onMetrics)
		}
		if g == f.Leader() && rc.Candidacies < 1 {
			t.Errorf("%s leads with %d candidacies counted", g, rc.Candidacies)
		}
	}
}

// grepLine is the first line of text that starts with prefix.
func grepLine(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// 4. A node killed and restarted with its data dir rejoins without a token.
func TestRestartRejoinsWithoutToken(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: fiveEdges()})
	for _, name := range []string{"e2", "gw2"} {
		f.Kill(name)
		testenv.Eventually(t, 15*time.Second, func() error {
			st, err := f.NodeState("gw1", name)
			if err != nil {
				return err
			}
			if st != "offline" {
				return errorf("%s still %s", name, st)
			}
			return nil
		})
		f.Restart(name)
		f.WaitConverged(30 * time.Second)
	}
	// The restarted gateway is a voter again and follows the leader's writes.
	if _, err := f.Client("gw2").CreateToken(context.Background(), api.TokenCreateRequest{Role: "sensor"}); err != nil {
		t.Fatal(err)
	}
	want := f.Member(f.Leader()).Node.Store().Version()
	testenv.Eventually(t, 10*time.Second, func() error {
		if v := f.Member("gw2").Node.Store().Version(); v < want {
			return errorf("gw2 at %d, leader at %d", v, want)
		}
		return nil
	})
}

// 5. A partition that leaves a gateway in the minority: writes there fail
// with a clear "no quorum" error; reads still answer and say how stale they
// may be; after healing both sides agree.
func TestMinorityPartition(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: fiveEdges()})
	ctx := context.Background()
	leader := f.Leader()
	var minorityGW string
	for _, g := range []string{"gw1", "gw2", "gw3"} {
		if g == leader { // put the leader itself in the minority: it must step down
			minorityGW = g
		}
	}
	minority := []string{minorityGW, "e1"}
	var majority []string
	for _, n := range f.Names() {
		if n != minorityGW && n != "e1" {
			majority = append(majority, n)
		}
	}
	f.Partition(minority, majority)

	for _, n := range minority {
		testenv.Eventually(t, 20*time.Second, func() error {
			_, err := f.Client(n).CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
			var se *api.StatusError
			if !errors.As(err, &se) {
				return errorf("%s: write did not fail cleanly: %v", n, err)
			}
			if se.Code != 503 || !strings.Contains(se.Message, "no quorum") {
				return errorf("%s: got %d %q, want 503 no quorum", n, se.Code, se.Message)
			}
			return nil
		})
		// Reads still answer, and say how stale they may be.
		testenv.Eventually(t, 20*time.Second, func() error {
			fv, meta, err := f.FleetView(n)
			if err != nil {
				return err
			}
			if meta.Index == 0 {
				return errorf("%s: no index header", n)
			}
			if meta.LastContact < time.Second {
				return errorf("%s: last contact %v, want it to grow while cut off", n, meta.LastContact)
			}
			if fv.Offline == 0 {
				return errorf("%s: sees nobody offline", n)
			}
			return nil
		})
	}
	// The majority elects a leader and takes writes.
	var tokID string
	testenv.Eventually(t, 20*time.Second, func() error {
		r, err := f.Client("e2").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
		if err != nil {
			return err
		}
		tokID = r.ID
		return nil
	})

	f.Heal()
	f.WaitConverged(60 * time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		var versions []uint64
		for _, n := range f.Names() {
			fv, _, err := f.FleetView(n)
			if err != nil {
				return err
			}
			versions = append(versions, fv.SpecVersion)
		}
		for _, v := range versions[1:] {
			if v != versions[0] {
				return errorf("spec versions differ: %v", versions)
			}
		}
		toks, err := f.Client("e1").Tokens(ctx)
		if err != nil {
			return err
		}
		for _, tk := range toks {
			if tk.ID == tokID {
				return nil
			}
		}
		return errorf("e1 does not have the token written during the partition")
	})
}

// At most five gateways vote; a sixth joins the Raft group as a non-voter.
// When a voter is evicted, the leader promotes the non-voter, so the fleet
// keeps five votes.
func TestSixthGatewayIsNonVoter(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 6})
	raftSeats := func(wantServers, wantVoters int, voter string) func() error {
		return func() error {
			leader := f.Leader()
			if leader == "" {
				return errorf("no leader")
			}
			servers, err := f.Member(leader).Node.Store().Servers()
			if err != nil {
				return err
			}
			voters, isVoter := 0, false
			for _, s := range servers {
				if s.Voter {
					voters++
					isVoter = isVoter || s.ID == voter
				}
			}
			if len(servers) != wantServers || voters != wantVoters || (voter != "" && !isVoter) {
				return errorf("%d servers, %d voters (%s a voter: %v); want %d and %d", len(servers), voters, voter, isVoter, wantServers, wantVoters)
			}
			return nil
		}
	}
	testenv.Eventually(t, 20*time.Second, raftSeats(6, 5, ""))
	ctx := context.Background()
	v, _, err := f.Client("gw2").Node(ctx, "gw6")
	if err != nil {
		t.Fatal(err)
	}
	if v.Voter == nil || *v.Voter {
		t.Errorf("gw6 is reported with voter %v, want false", v.Voter)
	}

	victim := "gw2"
	if f.Leader() == victim {
		victim = "gw3"
	}
	if _, err := f.Client("gw1").Evict(ctx, victim); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, raftSeats(5, 5, "gw6"))
}

// An edge follows the spec by deltas (the changes since its copy), not by
// fetching the whole spec per version; it keeps its copy on disk and, when
// restarted, catches up from it by a delta again.
func TestEdgeFollowsSpecByDeltas(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	ctx := context.Background()
	same := func(want int) error {
		gw, err := f.Client("gw1").Tokens(ctx)
		if err != nil {
			return err
		}
		edge, err := f.Client("s1").Tokens(ctx)
		if err != nil {
			return err
		}
		if len(gw) != want || len(edge) != want {
			return errorf("tokens: gateway lists %d, edge %d, want %d", len(gw), len(edge), want)
		}
		for i := range gw {
			if gw[i].ID != edge[i].ID || gw[i].Used != edge[i].Used || gw[i].Revoked != edge[i].Revoked {
				return errorf("token %d: gateway %+v, edge %+v", i, gw[i], edge[i])
			}
		}
		return nil
	}
	base, err := f.Client("gw1").Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write := func(n int) {
		t.Helper()
		for range n {
			tok, err := f.Client("gw1").CreateToken(ctx, api.TokenCreateRequest{Role: "compute"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Client("gw1").Do(ctx, http.MethodDelete, "/v1/tokens/"+tok.ID, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	fetches := func(kind string) (int, error) {
		text, err := metricsText(f, "s1")
		if err != nil {
			return 0, err
		}
		return promValue(text, `fleetmesh_spec_fetches_total{kind="`+kind+`"}`), nil
	}
	write(10)
	testenv.Eventually(t, 10*time.Second, func() error { return same(len(base) + 10) })
	testenv.Eventually(t, 10*time.Second, func() error {
		d, err := fetches("delta")
		if err != nil {
			return err
		}
		if d == 0 {
			return errorf("the edge took no delta")
		}
		return nil
	})

	// Restarted, the edge answers from its saved copy and catches up from
	// it by deltas: it never needs the whole spec again.
	f.Kill("s1")
	write(5)
	f.Restart("s1")
	write(5)
	testenv.Eventually(t, 10*time.Second, func() error { return same(len(base) + 20) })
	full, err := fetches("full")
	if err != nil {
		t.Fatal(err)
	}
	if full != 0 {
		t.Fatalf("the restarted edge fetched the whole spec %d times; it had a copy to take deltas from", full)
	}
}

// promValue returns the value of the sample named exactly series in a
// Prometheus text exposition, or 0 if absent.
func promValue(text, series string) int {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var n float64
			fmt.Sscan(v, &n)
			return int(n)
		}
	}
	return 0
}
