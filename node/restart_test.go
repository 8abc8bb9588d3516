package node_test

import (
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// A restart with nothing but the data dir binds and advertises what the
// node was made with; settings that contradict the data dir are refused.
func TestRestartKeepsAddressesAndRefusesContradictions(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor", Site: "site-a"}}})
	m := f.Member("s1")
	api, gossip := m.Node.APIAddr(), m.Node.GossipAddr()
	f.Stop("s1")

	for _, bad := range []struct {
		cfg  node.Config
		want string
	}{
		{node.Config{DataDir: m.DataDir, Name: "other"}, `belongs to node "s1"`},
		{node.Config{DataDir: m.DataDir, Role: "compute"}, "role cannot change"},
		{node.Config{DataDir: m.DataDir, Site: "site-z"}, "site"},
		{node.Config{DataDir: m.DataDir, Labels: map[string]string{"x": "y"}}, "labels cannot change"},
	} {
		if n, err := node.Start(bad.cfg); err == nil || !strings.Contains(err.Error(), bad.want) {
			if n != nil {
				n.Close()
			}
			t.Fatalf("restart with %+v: %v, want an error mentioning %q", bad.cfg, err, bad.want)
		}
	}

	c := f.Config(m, false, "")
	c.Bind, c.API, c.RaftBind, c.Name, c.Role, c.Site = "", "", "", "", "", ""
	n, err := node.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.APIAddr() != api || n.GossipAddr() != gossip {
		t.Fatalf("restart moved the node: api %s -> %s, gossip %s -> %s", api, n.APIAddr(), gossip, n.GossipAddr())
	}
	if n.Name() != "s1" || n.Role() != "sensor" {
		t.Fatalf("restart changed identity: %s %s", n.Name(), n.Role())
	}
}
