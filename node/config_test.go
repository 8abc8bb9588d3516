package node

import (
	"net"
	"testing"

	"github.com/fleetmesh/fleetmesh/mesh"
)

// The API and Raft default to the gossip address's host, so a node started
// with only --bind (or with nothing) can be reached by other devices: its
// join tokens, spec copies and forwarded writes point at an address on the
// network, never at loopback while gossip faces the network.
func TestAddressesDefaultToTheGossipHost(t *testing.T) {
	for _, tc := range []struct{ bind, api, raft string }{
		{"", "0.0.0.0:7400", "0.0.0.0:7947"},
		{"10.20.0.2:7946", "10.20.0.2:7400", "10.20.0.2:7947"},
		{"127.0.0.5:0", "127.0.0.5:7400", "127.0.0.5:7947"},
	} {
		c := Config{Bind: tc.bind}
		c.setDefaults()
		if c.API != tc.api || c.RaftBind != tc.raft {
			t.Errorf("bind %q: api %s, raft %s; want %s, %s", tc.bind, c.API, c.RaftBind, tc.api, tc.raft)
		}
	}
	c := Config{Bind: "10.20.0.2:7946", API: "127.0.0.1:9000", RaftBind: "10.20.0.2:8000"}
	c.setDefaults()
	if c.API != "127.0.0.1:9000" || c.RaftBind != "10.20.0.2:8000" {
		t.Errorf("set addresses were changed: api %s, raft %s", c.API, c.RaftBind)
	}
	// An API on every address advertises the host gossip advertises.
	got := advertised("", "0.0.0.0:7400", "0.0.0.0:7946")
	if h, _, _ := net.SplitHostPort(got); net.ParseIP(h).IsUnspecified() || h != mesh.AdvertiseIP() {
		t.Errorf("API on 0.0.0.0 advertises %s", got)
	}
	if !isLoopback("127.0.0.1:7400") || !isLoopback("[::1]:1") || !isLoopback("localhost:1") || isLoopback("10.0.0.1:1") {
		t.Error("isLoopback is wrong")
	}
}
