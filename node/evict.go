package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
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
