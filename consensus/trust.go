package consensus

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Trust: the gossip keyring, certificate revocation and the audit log.
//
// The gossip keys themselves are Secrets (gateways only). The spec, which
// every node copies, carries only their fingerprints: which keys make up the
// keyring, which one encrypts (Primary), and which one should encrypt once
// every live node holds it (Target). A rotation is Target != Primary; the
// leader's controller advances it (OpUseKey, then OpPruneKeys) as nodes
// report in gossip which keys they hold.

// Errors of trust commands.
var (
	ErrLastAdmin  = errors.New("refusing to revoke the last admin credential: create another admin credential first")
	ErrKeyUnknown = errors.New("no such gossip key in the keyring")
)

// Trust command ops.
const (
	// OpRotateKey adds a new gossip key (chosen by the leader, see
	// Store.Apply) and makes it the rotation target. With ID, an evicted
	// gateway's pending rekey is done.
	OpRotateKey = "rotate_key"
	// OpUseKey makes key ID (a fingerprint) the primary.
	OpUseKey = "use_key"
	// OpPruneKeys drops every key but the primary.
	OpPruneKeys = "prune_keys"
	// OpRenewCert records a device's new certificate serial.
	OpRenewCert = "renew_cert"
)

// MaxAudit bounds the audit log kept in the FSM (the oldest entries go).
const MaxAudit = 1000

// GossipKeyring is the public view of the gossip keyring, in the spec.
type GossipKeyring struct {
	// Keys are the fingerprints of every key in the keyring.
	Keys []string `json:"keys"`
	// Primary encrypts; every key in Keys decrypts.
	Primary string `json:"primary"`
	// Target is the key that becomes primary once every live node has it.
	Target string `json:"target,omitempty"`
}

// Rotating reports whether a rotation is under way (a new key waits to
// become primary, or old keys wait to be dropped).
func (g GossipKeyring) Rotating() bool { return g.Target != g.Primary || len(g.Keys) > 1 }

// AuditEntry is one write as recorded in the audit log: who (the operator
// credential's id and name, never its secret), what, when, from where, and
// how it ended.
type AuditEntry struct {
	Index        uint64    `json:"index"`
	Time         time.Time `json:"time"`
	OperatorID   string    `json:"operator_id"`
	OperatorName string    `json:"operator_name,omitempty"`
	Role         string    `json:"role,omitempty"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Summary      string    `json:"summary,omitempty"`
	Remote       string    `json:"remote"`
	// Via is the node that took the request.
	Via    string `json:"via,omitempty"`
	Result string `json:"result"` // ok or error
	Error  string `json:"error,omitempty"`
}

// KeyFingerprint names a gossip key without revealing it: the first 8 bytes
// of its SHA-256, in hex.
func KeyFingerprint(k []byte) string {
	s := sha256.Sum256(k)
	return hex.EncodeToString(s[:8])
}

// Keyring returns every gossip key, the primary first.
func (s Secrets) Keyring() [][]byte {
	out := [][]byte{s.GossipKey}
	for _, k := range s.GossipKeys {
		if KeyFingerprint(k) != KeyFingerprint(s.GossipKey) {
			out = append(out, k)
		}
	}
	return out
}

// KeyByFingerprint returns the key with fingerprint fp.
func (s Secrets) KeyByFingerprint(fp string) ([]byte, bool) {
	for _, k := range s.Keyring() {
		if KeyFingerprint(k) == fp {
			return k, true
		}
	}
	return nil, false
}

// IsRevoked reports whether a certificate (by its serial, hex, and the
// device name it was issued to) is revoked: its serial is on the list or its
// device is evicted.
func (s *Spec) IsRevoked(serial, name string) bool {
	if _, ok := s.Revoked[serial]; ok {
		return true
	}
	d, ok := s.Devices[name]
	return ok && d.State == DeviceEvicted
}

// keyOps need a fresh random key, which the leader picks in Store.Apply.
// An evicted gateway is rekeyed later (Device.RekeyPending): a key in the
// eviction's own log entry would reach it.
func needsKey(c *Command) bool {
	return c.Op == OpRotateKey || (c.Op == OpRemoveDevice && c.RotateKey)
}

// fillKey gives c a new gossip key. It overwrites whatever the proposer sent:
// only the leader chooses keys, so no other node (an evicted one asked to
// evict itself, say) ever learns a key before it is distributed.
func fillKey(c *Command) error {
	if !needsKey(c) {
		c.Key = nil
		return nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	c.Key = k
	return nil
}

// applyTrust handles the trust ops; ok is false for ops it does not know.
func (f *fsm) applyTrust(c *Command) (ok bool, err error) {
	s := f.spec
	switch c.Op {
	case OpRotateKey:
		if err := f.startRotation(c.Key); err != nil {
			return true, err
		}
		if d, found := s.Devices[c.ID]; found && c.ID != "" {
			d.RekeyPending = false
		}
	case OpUseKey:
		if !slices.Contains(s.Gossip.Keys, c.ID) {
			return true, fmt.Errorf("%w: %s", ErrKeyUnknown, c.ID)
		}
		k, found := f.secrets.KeyByFingerprint(c.ID)
		if !found {
			return true, fmt.Errorf("%w: %s", ErrKeyUnknown, c.ID)
		}
		f.secrets.GossipKey = k
		s.Gossip.Primary = c.ID
	case OpPruneKeys:
		f.secrets.GossipKeys = [][]byte{f.secrets.GossipKey}
		s.Gossip.Keys = []string{s.Gossip.Primary}
		s.Gossip.Target = s.Gossip.Primary
	case OpRenewCert:
		d, found := s.Devices[c.ID]
		if !found {
			return true, ErrDeviceUnknown
		}
		if d.State == DeviceEvicted {
			return true, ErrEvicted
		}
		if c.Serial == "" {
			return true, fmt.Errorf("%w: renewal without serial", ErrBadCommand)
		}
		d.CertSerial = c.Serial
	default:
		return false, nil
	}
	return true, nil
}

// startRotation adds key k to the keyring as the rotation target.
func (f *fsm) startRotation(k []byte) error {
	if err := checkGossipKey(k); err != nil {
		return err
	}
	fp := KeyFingerprint(k)
	f.secrets.GossipKeys = append(f.secrets.Keyring(), k)
	s := f.spec
	if len(s.Gossip.Keys) == 0 {
		s.Gossip.Keys = []string{KeyFingerprint(f.secrets.GossipKey)}
		s.Gossip.Primary = s.Gossip.Keys[0]
	}
	if !slices.Contains(s.Gossip.Keys, fp) {
		s.Gossip.Keys = append(s.Gossip.Keys, fp)
	}
	s.Gossip.Target = fp
	return nil
}

// checkGossipKey refuses a key memberlist cannot use.
func checkGossipKey(k []byte) error {
	if l := len(k); l != 16 && l != 24 && l != 32 {
		return fmt.Errorf("%w: gossip key of %d bytes", ErrBadCommand, len(k))
	}
	return nil
}

// revokeDevice adds d's certificate serial to the revocation list.
func revokeDevice(s *Spec, d *Device) {
	if d.CertSerial != "" {
		s.Revoked[d.CertSerial] = d.Name
	}
}

// activeAdmins counts admin credentials that are not revoked.
func activeAdmins(s *Spec) int {
	n := 0
	for _, o := range s.Operators {
		if o.Role == OperatorAdmin && !o.Revoked {
			n++
		}
	}
	return n
}

// appendAudit records e, keeping the last MaxAudit entries.
// The slice may hold up to twice MaxAudit, so that trimming (a copy) happens
// once every MaxAudit writes rather than on each; readers see the tail.
func (f *fsm) appendAudit(e AuditEntry) {
	f.audit = append(f.audit, e)
	if len(f.audit) > 2*MaxAudit {
		f.audit = append([]AuditEntry(nil), f.audit[len(f.audit)-MaxAudit:]...)
	}
}

// auditTail is the last MaxAudit entries.
func (f *fsm) auditTail() []AuditEntry {
	if over := len(f.audit) - MaxAudit; over > 0 {
		return f.audit[over:]
	}
	return f.audit
}

// Audit returns the audit log, oldest first.
func (s *Store) Audit() []AuditEntry {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return append([]AuditEntry(nil), s.fsm.auditTail()...)
}
