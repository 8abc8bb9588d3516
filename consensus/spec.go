package consensus

import (
	"crypto/subtle"
	"encoding/json"
	"time"
)

// Device registration states kept in the spec. The live state a node reports
// (ready, error, ...) rides gossip; the spec only records what the fleet
// decided about the device.
const (
	DeviceProvisioning = "provisioning" // pre-registered, never joined
	DeviceJoined       = "joined"
	DeviceEvicted      = "evicted"
)

// Roles a device can have.
var Roles = []string{"gateway", "sensor", "compute", "storage", "hybrid"}

// ValidRole reports whether r is one of Roles.
func ValidRole(r string) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Operator credential roles.
const (
	OperatorAdmin  = "admin"
	OperatorViewer = "viewer"
)

// Spec is the fleet spec: everything the fleet has decided. It is public
// within the fleet: every node keeps a copy. Secrets never go in it; hashes
// of high-entropy secrets do.
type Spec struct {
	// Version is the Raft index of the last change; it only grows.
	Version   uint64                     `json:"version"`
	ClusterID string                     `json:"cluster_id"`
	CACertPEM string                     `json:"ca_cert_pem"`
	Devices   map[string]*Device         `json:"devices"`
	Tokens    map[string]*JoinToken      `json:"tokens"`
	Operators map[string]*Operator       `json:"operators"`
	Apps      map[string]*AppRecord      `json:"apps,omitempty"`
	Rollouts  map[string]json.RawMessage `json:"rollouts,omitempty"`
	Policies  map[string]json.RawMessage `json:"policies,omitempty"`
	// Gossip names the gossip keys by fingerprint (the keys are Secrets).
	Gossip GossipKeyring `json:"gossip"`
	// Revoked maps revoked certificate serials (hex) to the device they
	// were issued to. Every node refuses them, and every certificate of an
	// evicted device, on node-to-node connections.
	Revoked map[string]string `json:"revoked,omitempty"`
	// Level is the highest FSM level of any command applied to the spec
	// (Command.Level): a binary whose FSMLevel is lower cannot hold it.
	Level int `json:"level,omitempty"`
}

// Device is a registered device.
type Device struct {
	Name     string            `json:"name"`
	Role     string            `json:"role"`
	Site     string            `json:"site,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	State    string            `json:"state"`
	TokenID  string            `json:"token_id,omitempty"`
	Model    string            `json:"model,omitempty"`
	Serial   string            `json:"serial,omitempty"`
	JoinedAt time.Time         `json:"joined_at"`
	// Registered is when the device was pre-registered by provisioning.
	Registered time.Time `json:"registered,omitempty"`
	// KeyID is the hex SHA-256 of the device's public key: a join retried
	// with the same key and token (after a failure on the device's side)
	// is the same join, not a second device.
	KeyID string `json:"key_id,omitempty"`
	// CertSerial is the serial (hex) of the device's current certificate.
	CertSerial string `json:"cert_serial,omitempty"`
	// RekeyPending: an evicted gateway's gossip key rotation waits until
	// it has lost its Raft seat (else the new key would reach it in the
	// Raft log).
	RekeyPending bool `json:"rekey_pending,omitempty"`
}

// JoinToken is a join token as stored: the secret only as a hash.
type JoinToken struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// MaxUses is how many joins the token allows; 0 means unlimited.
	MaxUses int  `json:"max_uses"`
	Uses    int  `json:"uses"`
	Revoked bool `json:"revoked,omitempty"`
}

// TokenFor returns the join token named id if hash is the hash of its
// secret (compared in constant time).
func (s *Spec) TokenFor(id, hash string) (*JoinToken, bool) {
	t, ok := s.Tokens[id]
	if !ok || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hash)) != 1 {
		return nil, false
	}
	return t, true
}

// Prunable reports whether the token expired TokenRetention or more before
// now. A token without an expiry never is.
func (t *JoinToken) Prunable(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires.Add(TokenRetention))
}

// UsesLeft returns the remaining joins, or -1 for unlimited.
func (t *JoinToken) UsesLeft() int {
	if t.MaxUses == 0 {
		return -1
	}
	return t.MaxUses - t.Uses
}

// Operator is an operator credential as stored: the secret only as a hash.
type Operator struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"`
	Role    string    `json:"role"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked,omitempty"`
}

// Secrets are held by gateways only, in the FSM and its snapshots; they
// never leave the gateways' Raft group except as the gossip key handed to a
// node at join, over TLS.
type Secrets struct {
	CAKeyPEM  []byte `json:"ca_key_pem"`
	GossipKey []byte `json:"gossip_key"`
	// GossipKeys is the whole keyring during a rotation (GossipKey among
	// them); empty when GossipKey is the only key.
	GossipKeys [][]byte `json:"gossip_keys,omitempty"`
}

func newSpec() *Spec {
	return &Spec{
		Devices:   map[string]*Device{},
		Tokens:    map[string]*JoinToken{},
		Operators: map[string]*Operator{},
		Apps:      map[string]*AppRecord{},
		Rollouts:  map[string]json.RawMessage{},
		Policies:  map[string]json.RawMessage{},
		Revoked:   map[string]string{},
	}
}

// Clone returns a deep copy of s.
func (s *Spec) Clone() *Spec {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // the spec is plain data; marshalling cannot fail
	}
	out := newSpec()
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

// DecodeSpec parses a spec from JSON, filling empty maps.
func DecodeSpec(b []byte) (*Spec, error) {
	s := newSpec()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, err
	}
	fill(s)
	return s, nil
}

func fill(s *Spec) {
	if s.Devices == nil {
		s.Devices = map[string]*Device{}
	}
	if s.Tokens == nil {
		s.Tokens = map[string]*JoinToken{}
	}
	if s.Operators == nil {
		s.Operators = map[string]*Operator{}
	}
	if s.Apps == nil {
		s.Apps = map[string]*AppRecord{}
	}
	if s.Rollouts == nil {
		s.Rollouts = map[string]json.RawMessage{}
	}
	if s.Policies == nil {
		s.Policies = map[string]json.RawMessage{}
	}
	if s.Revoked == nil {
		s.Revoked = map[string]string{}
	}
}

// AppRecord is an application in the spec with every version ever deployed.
// Manifests are kept as canonical JSON: consensus does not interpret them.
type AppRecord struct {
	Name string `json:"name"`
	// Current is the version devices should run.
	Current  string       `json:"current"`
	Versions []AppVersion `json:"versions"`
	// Removed is set by apps rm; the history stays.
	Removed   bool      `json:"removed,omitempty"`
	RemovedAt time.Time `json:"removed_at,omitempty"`
}

// AppVersion is one deployed version of an application.
type AppVersion struct {
	Version  string          `json:"version"`
	Manifest json.RawMessage `json:"manifest"`
	Index    uint64          `json:"index"`
	Deployed time.Time       `json:"deployed"`
}

// CurrentVersion returns the version devices should run.
func (a *AppRecord) CurrentVersion() *AppVersion {
	for i := len(a.Versions) - 1; i >= 0; i-- {
		if a.Versions[i].Version == a.Current {
			return &a.Versions[i]
		}
	}
	return nil
}
