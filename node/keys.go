package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// Gossip key rotation, memberlist-style and without downtime:
//
//  1. POST /v1/keys/rotate (or an eviction) commits a rotation: the leader
//     picks a new key, the FSM adds it to the gateway secrets and the spec
//     names it (by fingerprint) as the target.
//  2. Every node's trust loop sees in its spec a key it lacks and fetches
//     the keyring: gateways from their FSM, other nodes from a gateway over
//     mutual TLS (/internal/v1/keys, which refuses revoked certificates, so
//     an evicted device never gets the new key). It adds the key to its
//     memberlist keyring and gossips the fingerprints it holds.
//  3. When every live, non-evicted node holds the target, the leader commits
//     OpUseKey: every node switches its primary (still decrypting the old).
//  4. When every live node encrypts with the new key, the leader commits
//     OpPruneKeys: every node drops the old keys.
//
// A node that was away during a rotation and can no longer talk to anyone
// fetches the keyring from a gateway over mutual TLS when it finds itself
// alone (see recoverKeys).

// keyFingerprints are the fingerprints of the keys this node holds, the
// primary first.
func (n *Node) keyFingerprints() []string {
	n.trust.keysMu.Lock()
	defer n.trust.keysMu.Unlock()
	out := make([]string, 0, len(n.keys))
	for _, k := range n.keys {
		out = append(out, consensus.KeyFingerprint(k))
	}
	return out
}

// reconcileKeys brings this node's keyring to what the spec says.
func (n *Node) reconcileKeys() {
	var want consensus.GossipKeyring
	n.withSpec(func(s *consensus.Spec) {
		want = consensus.GossipKeyring{Keys: slices.Clone(s.Gossip.Keys), Primary: s.Gossip.Primary, Target: s.Gossip.Target}
	})
	if want.Primary == "" || n.mesh == nil {
		return
	}
	have := n.keyFingerprints()
	missing := false
	for _, fp := range want.Keys {
		if !slices.Contains(have, fp) {
			missing = true
		}
	}
	var fetched [][]byte
	if missing {
		var err error
		if fetched, _, err = n.fetchKeys(n.ctx); err != nil {
			n.trust.logKeys.Do(func() { n.log.Warn("cannot fetch the gossip keyring yet", "err", err) })
			return
		}
	}
	if n.installKeys(want, have, fetched) {
		n.mesh.Update(n.health())
	}
}

// installKeys applies the wanted keyring to memberlist's; it reports
// whether anything changed.
func (n *Node) installKeys(want consensus.GossipKeyring, have []string, fetched [][]byte) bool {
	n.trust.keysMu.Lock()
	defer n.trust.keysMu.Unlock()
	changed := false
	for _, k := range fetched {
		fp := consensus.KeyFingerprint(k)
		if slices.Contains(want.Keys, fp) && !slices.Contains(have, fp) {
			if err := n.mesh.AddKey(k); err != nil {
				n.log.Warn("cannot install gossip key", "fingerprint", fp, "err", err)
				continue
			}
			changed = true
			n.log.Info("gossip key installed", "fingerprint", fp)
		}
	}
	ring := n.mesh.Keys()
	if len(ring) > 0 && consensus.KeyFingerprint(ring[0]) != want.Primary {
		for _, k := range ring {
			if consensus.KeyFingerprint(k) == want.Primary {
				if err := n.mesh.UseKey(k); err == nil {
					changed = true
					n.log.Info("gossip primary key switched", "fingerprint", want.Primary)
				}
			}
		}
	}
	for _, k := range n.mesh.Keys() {
		fp := consensus.KeyFingerprint(k)
		if !slices.Contains(want.Keys, fp) && fp != want.Primary {
			if err := n.mesh.RemoveKey(k); err == nil {
				changed = true
				n.log.Info("gossip key removed", "fingerprint", fp)
			}
		}
	}
	if changed {
		n.keys = n.mesh.Keys()
		if err := n.saveKeys(); err != nil {
			n.log.Warn("cannot save gossip keys", "err", err)
		}
	}
	return changed
}

// fetchKeys returns the fleet's gossip keyring (primary first) and the
// primary's fingerprint: from the FSM on a gateway, otherwise from a
// gateway over mutual TLS.
func (n *Node) fetchKeys(ctx context.Context) ([][]byte, string, error) {
	if n.store != nil {
		sec := n.store.Secrets()
		if len(sec.GossipKey) == 0 {
			return nil, "", errors.New("this gateway has no fleet secrets yet")
		}
		return sec.Keyring(), consensus.KeyFingerprint(sec.GossipKey), nil
	}
	var errs []error
	for _, addr := range n.gatewayAPIs() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var out keysResponse
		err := n.gatewayCall(ctx, http.MethodGet, addr, "/internal/v1/keys", &out)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var keys [][]byte
		for _, s := range out.Keys {
			k, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, "", fmt.Errorf("gateway %s sent a bad key: %w", addr, err)
			}
			keys = append(keys, k)
		}
		return keys, out.Primary, nil
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no gateway known")
	}
	return nil, "", errors.Join(errs...)
}

// gatewayAPIs are the API addresses of gateways to ask, live ones first.
func (n *Node) gatewayAPIs() []string {
	var live, rest []string
	for _, m := range n.mesh.Members() {
		if m.Role != "gateway" || m.API == "" || m.Name == n.state.Name {
			continue
		}
		if m.Alive {
			live = append(live, m.API)
		} else {
			rest = append(rest, m.API)
		}
	}
	out := append(live, rest...)
	for _, a := range n.state.Addrs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

type keysResponse struct {
	Keys    []string `json:"keys"`
	Primary string   `json:"primary"`
}

// handleInternalKeys hands the keyring to a node of the fleet whose
// certificate is valid and not revoked (member() checked that).
func (n *Node) handleInternalKeys(w http.ResponseWriter, r *http.Request) {
	if n.store == nil {
		writeError(w, http.StatusMisdirectedRequest, errors.New("only gateways hand out gossip keys"))
		return
	}
	sec := n.store.Secrets()
	out := keysResponse{Primary: consensus.KeyFingerprint(sec.GossipKey)}
	for _, k := range sec.Keyring() {
		out.Keys = append(out.Keys, base64.StdEncoding.EncodeToString(k))
	}
	writeJSON(w, http.StatusOK, out)
}

// recoverKeys: a node that finds itself alone on the mesh although the
// fleet has other devices may have missed a rotation while it was away.
// It fetches the keyring from a gateway over mutual TLS and installs it
// with the fleet's primary. An evicted node's certificate is refused, so it
// stays out.
func (n *Node) recoverKeys() {
	if n.store != nil || n.mesh.NumAlive() > 1 || time.Since(n.trust.lastRecover) < 2*time.Second {
		return
	}
	others := 0
	n.withSpec(func(s *consensus.Spec) {
		for name, d := range s.Devices {
			if name != n.state.Name && d.State == consensus.DeviceJoined {
				others++
			}
		}
	})
	if others == 0 {
		return
	}
	n.trust.lastRecover = time.Now()
	keys, primary, err := n.fetchKeys(n.ctx)
	if err != nil || len(keys) == 0 {
		return
	}
	n.trust.keysMu.Lock()
	defer n.trust.keysMu.Unlock()
	changed := false
	for _, k := range keys {
		if !slices.ContainsFunc(n.mesh.Keys(), func(h []byte) bool { return bytes.Equal(h, k) }) {
			if n.mesh.AddKey(k) == nil {
				changed = true
			}
		}
		if consensus.KeyFingerprint(k) == primary {
			if ring := n.mesh.Keys(); len(ring) > 0 && !bytes.Equal(ring[0], k) && n.mesh.UseKey(k) == nil {
				changed = true
			}
		}
	}
	if changed {
		n.keys = n.mesh.Keys()
		n.saveKeys()
		n.log.Info("gossip keyring recovered from a gateway", "primary", primary)
	}
}

// advanceRotation is the leader's part of a rotation: it moves the primary
// once every live node holds the target key, and prunes the old keys once
// every live node encrypts with it. Leader only.
func (n *Node) advanceRotation() {
	var g consensus.GossipKeyring
	evicted := map[string]bool{}
	n.store.View(func(s *consensus.Spec) {
		g = consensus.GossipKeyring{Keys: slices.Clone(s.Gossip.Keys), Primary: s.Gossip.Primary, Target: s.Gossip.Target}
		for name, d := range s.Devices {
			if d.State == consensus.DeviceEvicted {
				evicted[name] = true
			}
		}
	})
	if g.Primary == "" || !g.Rotating() {
		return
	}
	lagging := n.lagging(g, evicted)
	if len(lagging) > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	var err error
	if g.Target != "" && g.Target != g.Primary {
		_, err = n.store.Apply(ctx, &consensus.Command{Op: consensus.OpUseKey, ID: g.Target})
		if err == nil {
			n.log.Info("gossip key rotation: every live node holds the new key; switching primary", "fingerprint", g.Target)
		}
	} else {
		_, err = n.store.Apply(ctx, &consensus.Command{Op: consensus.OpPruneKeys})
		if err == nil {
			n.log.Info("gossip key rotation: every live node encrypts with the new key; old keys dropped", "fingerprint", g.Primary)
		}
	}
	if err != nil && !errors.Is(err, consensus.ErrNotLeader) {
		n.log.Warn("gossip key rotation cannot advance", "err", err)
	}
}

// lagging names the live, non-evicted nodes a rotation waits for.
func (n *Node) lagging(g consensus.GossipKeyring, evicted map[string]bool) []string {
	var out []string
	for _, m := range n.mesh.Members() {
		if !m.Alive || evicted[m.Name] {
			continue
		}
		switch {
		case g.Target != g.Primary:
			if !slices.Contains(m.Health.Keys, g.Target) {
				out = append(out, m.Name)
			}
		default:
			if len(m.Health.Keys) == 0 || m.Health.Keys[0] != g.Primary {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

func (n *Node) handleKeys(w http.ResponseWriter, r *http.Request) {
	var g consensus.GossipKeyring
	evicted := map[string]bool{}
	n.withSpec(func(s *consensus.Spec) {
		g = consensus.GossipKeyring{Keys: slices.Clone(s.Gossip.Keys), Primary: s.Gossip.Primary, Target: s.Gossip.Target}
		for name, d := range s.Devices {
			if d.State == consensus.DeviceEvicted {
				evicted[name] = true
			}
		}
	})
	out := api.Keys{Keys: []api.GossipKey{}, Rotating: g.Primary != "" && g.Rotating()}
	members := n.mesh.Members()
	for _, fp := range g.Keys {
		k := api.GossipKey{Fingerprint: fp, Primary: fp == g.Primary, Target: fp == g.Target && g.Target != g.Primary}
		for _, m := range members {
			if !m.Alive || evicted[m.Name] {
				continue
			}
			if slices.Contains(m.Health.Keys, fp) {
				k.Nodes++
			}
			if len(m.Health.Keys) > 0 && m.Health.Keys[0] == fp {
				k.Using++
			}
		}
		out.Keys = append(out.Keys, k)
	}
	if out.Rotating {
		out.Lagging = n.lagging(g, evicted)
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleKeysRotate(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		var req struct{}
		if !decodeBody(w, r, &req) {
			return
		}
	}
	noteAudit(r, "rotated the gossip key")
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRotateKey})
	if err != nil {
		writeErr(w, err)
		return
	}
	var target string
	n.withSpec(func(s *consensus.Spec) { target = s.Gossip.Target })
	n.log.Info("gossip key rotation started", "target", target)
	writeJSON(w, http.StatusAccepted, api.WriteResult{Index: idx})
}
