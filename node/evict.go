package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// Eviction (DELETE /v1/nodes/{name}) is one Raft command: it marks the
// device evicted, puts its certificate serial on the revocation list and
// starts a gossip key rotation, all at once. From the moment a node's spec
// has it, the node refuses the device's certificate (by serial and by name,
// so renewed certificates too) on every node-to-node endpoint and on Raft,
// and never hands it the new gossip key; once the rotation completes the
// device can neither read nor speak on the mesh. The leader removes an
// evicted gateway's Raft seat (removeEvictedSeats, which also runs after a
// leader change). The FSM refuses a later join under the evicted name.

func (n *Node) handleEvict(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var d consensus.Device
	var found bool
	gateways := 0
	n.withSpec(func(s *consensus.Spec) {
		if dd, ok := s.Devices[name]; ok {
			d, found = *dd, true
		}
		for _, dd := range s.Devices {
			if dd.Role == "gateway" && dd.State == consensus.DeviceJoined {
				gateways++
			}
		}
	})
	switch {
	case !found:
		writeError(w, http.StatusNotFound, fmt.Errorf("no node named %q in this fleet", name))
		return
	case d.State == consensus.DeviceEvicted:
		writeError(w, http.StatusConflict, fmt.Errorf("%s is already evicted", name))
		return
	case d.Role == "gateway" && d.State == consensus.DeviceJoined && gateways <= 1:
		writeError(w, http.StatusConflict, fmt.Errorf("%s is the fleet's only gateway; join another gateway before evicting it", name))
		return
	}
	noteAudit(r, "evicted %s %s (certificate %s revoked, gossip key rotation started)", d.Role, name, d.CertSerial)
	// A gateway's rotation waits until it has lost its Raft seat, or the
	// new key would reach it in the Raft log (see removeEvictedSeats).
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRemoveDevice, ID: name, RotateKey: d.Role != "gateway"})
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("device evicted", "device", name, "role", d.Role)
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}

// removeEvictedSeats removes evicted gateways from the Raft configuration
// and then starts their gossip key rotation. Leader only.
func (n *Node) removeEvictedSeats() {
	var pending []string
	n.store.View(func(s *consensus.Spec) {
		for name, d := range s.Devices {
			if d.State == consensus.DeviceEvicted && d.RekeyPending {
				pending = append(pending, name)
			}
		}
	})
	if len(pending) == 0 {
		return
	}
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	for _, name := range pending {
		if slices.ContainsFunc(servers, func(s consensus.Server) bool { return s.ID == name }) {
			if err := n.store.RemoveServer(name); err != nil {
				n.log.Warn("cannot remove evicted gateway from raft", "gateway", name, "err", err)
				continue
			}
			n.log.Info("evicted gateway removed from raft", "gateway", name)
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		_, err := n.store.Apply(ctx, &consensus.Command{Op: consensus.OpRotateKey, ID: name})
		cancel()
		if err != nil {
			n.log.Warn("cannot start the gossip key rotation for an evicted gateway", "gateway", name, "err", err)
			continue
		}
		n.log.Info("gossip key rotation started for evicted gateway", "gateway", name)
	}
}

// promoteEvery is how often the leader looks for a voter seat to fill.
const promoteEvery = 2 * time.Second

// promoteGateways keeps consensus.MaxVoters voters while there are gateways
// for them: when a voter has left the Raft group (evicted), the leader
// promotes a non-voter that is alive on the mesh, healthy (not in error: a
// halted FSM is), caught up with the spec, and running a binary that
// applies the whole log; from the site with the fewest voters first, so
// that one site's outage takes as few votes as it can. Dead voters are not
// replaced: at a site cut off for days a gateway is unreachable, not gone,
// and only an operator (eviction) can tell. Leader only.
func (n *Node) promoteGateways() {
	if time.Since(n.promoteChecked) < promoteEvery {
		return
	}
	n.promoteChecked = time.Now()
	servers, err := n.store.Servers()
	if err != nil {
		return
	}
	var level int
	gateways := map[string]string{} // joined gateways by the spec, and their sites
	n.store.View(func(s *consensus.Spec) {
		level = s.Level
		for name, d := range s.Devices {
			if d.State == consensus.DeviceJoined && d.Role == "gateway" {
				gateways[name] = d.Site
			}
		}
	})
	version := n.store.Version()
	bySite := map[string]int{} // voters per site
	type cand struct {
		sv   consensus.Server
		site string
	}
	var cands []cand
	for _, sv := range servers {
		site, joined := gateways[sv.ID]
		if sv.Voter {
			bySite[site]++
			continue
		}
		m, ok := n.mesh.Member(sv.ID)
		if !joined || !ok || !m.Alive || m.State() != mesh.StateReady || m.FSM < level || m.Health.SpecVersion+promoteLag < version {
			continue // (an evicted gateway whose seat is not removed yet is not joined)
		}
		cands = append(cands, cand{sv, site})
	}
	voters := 0
	for _, c := range bySite {
		voters += c
	}
	for voters < consensus.MaxVoters && len(cands) > 0 {
		slices.SortStableFunc(cands, func(a, b cand) int { return bySite[a.site] - bySite[b.site] })
		c := cands[0]
		cands = cands[1:]
		if err := n.store.Promote(c.sv.ID, c.sv.Address); err != nil {
			n.log.Warn("cannot promote a gateway to Raft voter", "gateway", c.sv.ID, "err", err)
			return
		}
		n.log.Info("gateway promoted to Raft voter", "gateway", c.sv.ID, "site", c.site, "voters", voters+1)
		bySite[c.site]++
		voters++
	}
}

// promoteLag is how many spec versions a non-voter may lag and still be
// promoted (its gossiped version trails by a health interval).
const promoteLag = 64

// Evicted reports whether this node's spec marks the device evicted.
func (n *Node) Evicted(name string) bool {
	var ev bool
	n.withSpec(func(s *consensus.Spec) {
		d, ok := s.Devices[name]
		ev = ok && d.State == consensus.DeviceEvicted
	})
	return ev
}

// GossipKeys are the gossip keys this node holds, the primary first (tests
// use it to check rotations).
func (n *Node) GossipKeys() [][]byte {
	n.trust.keysMu.Lock()
	defer n.trust.keysMu.Unlock()
	return append([][]byte(nil), n.keys...)
}
