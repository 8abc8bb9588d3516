package node

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
)

// ErrCertRevoked refuses a certificate that is revoked or whose device was
// evicted.
var ErrCertRevoked = errors.New("certificate revoked: the device was evicted from the fleet")

// trustState is the node's part in the fleet's trust: its gossip keyring,
// the revocation list its TLS handshakes consult, and the renewal of its
// certificate.
type trustState struct {
	keysMu      sync.Mutex // guards Node.keys and keyring changes
	logKeys     sync.Once
	lastRecover time.Time
	// revoked is a snapshot of the spec's revocations, for TLS handshakes
	// (which must not wait on the FSM's lock).
	revoked atomic.Pointer[revocations]
}

type revocations struct {
	version uint64
	serials map[string]bool
	names   map[string]bool
}

func (v *revocations) has(c *x509.Certificate) bool {
	return v != nil && (v.serials[c.SerialNumber.Text(16)] || v.names[c.Subject.CommonName])
}

func (n *Node) trustRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/acl/tokens", n.admin(n.handleACLCreate))
	mux.HandleFunc("GET /v1/acl/tokens", n.admin(n.handleACLList))
	mux.HandleFunc("DELETE /v1/acl/tokens/{id}", n.admin(n.handleACLRevoke))
	mux.HandleFunc("DELETE /v1/tokens/{id}", n.admin(n.handleTokenRevoke))
	mux.HandleFunc("GET /v1/audit", n.admin(n.handleAudit))
	mux.HandleFunc("GET /v1/keys", n.viewer(n.handleKeys))
	mux.HandleFunc("POST /v1/keys/rotate", n.admin(n.handleKeysRotate))
	mux.HandleFunc("DELETE /v1/nodes/{name}", n.admin(n.handleEvict))
	// The audit log is kept off edge devices (they are easier to steal):
	// reading it through one needs the operator's admin credential too.
	mux.HandleFunc("GET /internal/v1/audit", n.member(n.forwardedWrite(n.handleInternalAudit)))
	mux.HandleFunc("GET /internal/v1/keys", n.member(n.handleInternalKeys))
	mux.HandleFunc("POST /internal/v1/renew", n.member(n.handleRenew))
}

// startTrust wires the revocation check into every TLS config of the node
// and starts the trust and renewal loops.
func (n *Node) startTrust() {
	n.refreshRevocations()
	n.id.SetRevocationCheck(func(c *x509.Certificate) error {
		if n.trust.revoked.Load().has(c) {
			return ErrCertRevoked
		}
		return nil
	})
	n.wg.Add(2)
	go n.trustLoop()
	go n.renewLoop()
}

// peerRevoked checks a verified peer certificate against this node's spec.
func (n *Node) peerRevoked(c *x509.Certificate) bool {
	var bad bool
	n.withSpec(func(s *consensus.Spec) { bad = s.IsRevoked(c.SerialNumber.Text(16), c.Subject.CommonName) })
	return bad
}

func (n *Node) refreshRevocations() {
	v := n.specVersion()
	if cur := n.trust.revoked.Load(); cur != nil && cur.version == v {
		return
	}
	r := &revocations{version: v, serials: map[string]bool{}, names: map[string]bool{}}
	n.withSpec(func(s *consensus.Spec) {
		for serial := range s.Revoked {
			r.serials[serial] = true
		}
		for name, d := range s.Devices {
			if d.State == consensus.DeviceEvicted {
				r.names[name] = true
			}
		}
	})
	n.trust.revoked.Store(r)
}

// trustLoop keeps the revocation snapshot and the gossip keyring in step
// with the spec; on the leader it also advances key rotations and removes
// evicted gateways from Raft.
func (n *Node) trustLoop() {
	defer n.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var specCh <-chan struct{}
	if n.store != nil {
		specCh = n.store.Watch()
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-specCh:
		}
		n.refreshRevocations()
		n.reconcileKeys()
		n.recoverKeys()
		if n.IsLeader() {
			n.advanceRotation()
			n.removeEvictedSeats()
			n.promoteGateways()
			n.pruneTokens()
		}
	}
}

// tokenCheckEvery is how often the leader looks for join tokens past
// retention; maxPrunePerCommand bounds one prune command (and so its Raft
// entry): a longer backlog goes in several.
const (
	tokenCheckEvery    = time.Minute
	maxPrunePerCommand = 1000
)

// now is the node's clock: Config.Now, or time.Now.
func (n *Node) now() time.Time {
	if n.cfg.Now != nil {
		return n.cfg.Now()
	}
	return time.Now()
}

// pruneTokens, on the leader, removes the join tokens that expired
// consensus.TokenRetention ago or longer, so the spec every node copies does not
// grow with every token ever made.
func (n *Node) pruneTokens() {
	at := n.now().UTC()
	if d := at.Sub(n.tokensChecked); d >= 0 && d < tokenCheckEvery {
		return // (a clock set back makes d negative: look now)
	}
	n.tokensChecked = at
	var ids []string
	n.withSpec(func(s *consensus.Spec) {
		for id, t := range s.Tokens {
			if len(ids) < maxPrunePerCommand && t.Prunable(at) {
				ids = append(ids, id)
			}
		}
	})
	if len(ids) == 0 {
		return
	}
	if lv := n.raftFSMLevel(); lv < consensus.OpLevel(consensus.OpPruneTokens) {
		n.log.Debug("expired join tokens wait for every gateway to run a binary that prunes them", "tokens", len(ids), "fsm_level", lv)
		return
	}
	if len(ids) == maxPrunePerCommand {
		n.tokensChecked = time.Time{} // more to do: look again next round
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := n.store.Apply(ctx, &consensus.Command{Op: consensus.OpPruneTokens, Time: at, IDs: ids}); err != nil {
		if !errors.Is(err, consensus.ErrNotLeader) {
			n.log.Warn("pruning expired join tokens failed; will try again", "err", err)
		}
		n.tokensChecked = time.Time{}
		return
	}
	n.log.Info("pruned join tokens that expired more than the retention ago", "count", len(ids), "retention", consensus.TokenRetention)
}
