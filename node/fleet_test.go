package node_test

import (
	"context"
	"testing"
	"time"

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
