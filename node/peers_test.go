package node_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv"
)

// Every node saves its peers' gossip addresses as soon as it learns them,
// not on a slow timer: a node restarted before the save comes back with no
// one to join and stays cut off (seeing every other node offline) until some
// peer happens to push/pull with it. The periodic save runs every 5 s; the
// deadline here is shorter.
func TestPeersSavedSoonAfterJoin(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{}, {}}})
	for _, name := range f.Names() {
		testenv.Eventually(t, 3*time.Second, func() error {
			b, err := os.ReadFile(filepath.Join(f.Member(name).DataDir, "peers.json"))
			if err != nil {
				return err
			}
			var saved []string
			if err := json.Unmarshal(b, &saved); err != nil {
				return err
			}
			for _, other := range f.Names() {
				if a := f.Member(other).Node.GossipAddr(); other != name && !slices.Contains(saved, a) {
					return errorf("%s saved %v, without %s (%s)", name, saved, other, a)
				}
			}
			return nil
		})
	}
	// And a node restarted at once rejoins through them.
	f.Kill("gw1")
	f.Restart("gw1")
	testenv.Eventually(t, 15*time.Second, func() error {
		for _, n := range f.Names() {
			m, ok := f.Member("gw1").Node.Mesh().Member(n)
			if !ok || !m.Alive {
				return errorf("restarted gw1 does not see %s alive", n)
			}
		}
		return nil
	})
}
