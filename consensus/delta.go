package consensus

import (
	"encoding/json"
	"fmt"
	"maps"
	"sort"
)

// Spec deltas: edges keep a copy of the spec and follow it with deltas
// rather than whole copies, so that a write costs the fleet in proportion to
// what it changed, not to the size of the spec (a fleet with thousands of
// devices, tokens and apps has a spec of megabytes).
//
// Every gateway's FSM records, for each command it applies, which entries of
// the spec the command touched (a ref: section and key). A delta from
// version V is the current value of every entry touched after V, plus the
// small scalar fields, which always ride along. Applied to a copy of the
// spec at version V, it gives the spec at the delta's version: the entries
// not touched after V are the same in both. The record is bounded
// (maxChanges); a node too far behind, or one that asks a gateway that
// restarted since (the record is in memory only), gets the whole spec.

// Spec sections a ref can name.
const (
	secDevices = iota + 1
	secTokens
	secOperators
	secApps
	secRollouts
	secPolicies
	secRevoked
)

type ref struct {
	sec int
	key string
}

type change struct {
	index uint64
	refs  []ref
}

// maxChanges bounds the record of touched entries, in applied commands.
const maxChanges = 8192

// SpecDelta is the change of the spec from version From to version To: the
// scalar fields as of To, and every map entry that changed in between, with
// its value as of To. Deleted lists the keys removed, by section name.
type SpecDelta struct {
	From      uint64                     `json:"from"`
	To        uint64                     `json:"to"`
	ClusterID string                     `json:"cluster_id"`
	CACertPEM string                     `json:"ca_cert_pem"`
	Gossip    GossipKeyring              `json:"gossip"`
	Devices   map[string]*Device         `json:"devices,omitempty"`
	Tokens    map[string]*JoinToken      `json:"tokens,omitempty"`
	Operators map[string]*Operator       `json:"operators,omitempty"`
	Apps      map[string]*AppRecord      `json:"apps,omitempty"`
	Rollouts  map[string]json.RawMessage `json:"rollouts,omitempty"`
	Policies  map[string]json.RawMessage `json:"policies,omitempty"`
	Revoked   map[string]string          `json:"revoked,omitempty"`
	Deleted   map[string][]string        `json:"deleted,omitempty"`
}

// touched lists the entries command c may have changed. It is called after
// the command was applied to s (with or without error: a refused command
// changed nothing, and listing entries that did not change is harmless).
// Every case of fsm.apply and fsm.applyTrust that changes a map entry must
// be covered here; TestDeltaMatchesSpec checks it over random commands.
func touched(c *Command, s *Spec) []ref {
	switch c.Op {
	case OpInit:
		if c.Init == nil {
			return nil
		}
		var r []ref
		if c.Init.Admin != nil {
			r = append(r, ref{secOperators, c.Init.Admin.ID})
		}
		if c.Init.Device != nil {
			r = append(r, ref{secDevices, c.Init.Device.Name})
		}
		return r
	case OpCreateToken:
		if c.Token != nil {
			return []ref{{secTokens, c.Token.ID}}
		}
	case OpRevokeToken:
		return []ref{{secTokens, c.ID}}
	case OpJoin:
		if c.Join != nil && c.Join.Device != nil {
			return []ref{{secTokens, c.Join.TokenID}, {secDevices, c.Join.Device.Name}}
		}
	case OpRegisterDevice:
		if c.Device != nil {
			return []ref{{secDevices, c.Device.Name}}
		}
	case OpRemoveDevice:
		r := []ref{{secDevices, c.ID}}
		if d, ok := s.Devices[c.ID]; ok && d.CertSerial != "" {
			r = append(r, ref{secRevoked, d.CertSerial})
		}
		return r
	case OpCreateOperator:
		if c.Operator != nil {
			return []ref{{secOperators, c.Operator.ID}}
		}
	case OpRevokeOperator:
		return []ref{{secOperators, c.ID}}
	case OpDeployApp, OpRemoveApp:
		return []ref{{secApps, c.ID}}
	case OpPutDocument, OpDeleteDocument:
		switch c.Kind {
		case "rollouts":
			return []ref{{secRollouts, c.ID}}
		case "policies":
			return []ref{{secPolicies, c.ID}}
		}
	case OpRotateKey, OpRenewCert:
		if c.ID != "" {
			return []ref{{secDevices, c.ID}}
		}
	}
	// OpUseKey, OpPruneKeys and the rest change only the scalar fields (or
	// nothing), which every delta carries.
	return nil
}

// record notes that the command at index touched refs. Called with f.mu
// held for writing.
func (f *fsm) record(index uint64, refs []ref) {
	if len(f.changes) >= 2*maxChanges {
		// Keep the newest half: the copy happens once per maxChanges
		// commands, not on each.
		drop := len(f.changes) - maxChanges
		f.changesFloor = f.changes[drop-1].index
		f.changes = append(f.changes[:0:0], f.changes[drop:]...)
	}
	f.changes = append(f.changes, change{index: index, refs: refs})
}

// deltaJSON returns the delta from version since to the current spec as
// JSON, or ok false when the record does not reach back to since (or since
// is not a version of this spec's past).
func (f *fsm) deltaJSON(since uint64) (b []byte, to uint64, ok bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := f.spec
	if since < f.changesFloor || since > s.Version || s.ClusterID == "" {
		return nil, 0, false, nil
	}
	d := SpecDelta{From: since, To: s.Version, ClusterID: s.ClusterID, CACertPEM: s.CACertPEM, Gossip: s.Gossip}
	i := sort.Search(len(f.changes), func(i int) bool { return f.changes[i].index > since })
	del := func(sec string, key string) {
		if d.Deleted == nil {
			d.Deleted = map[string][]string{}
		}
		d.Deleted[sec] = append(d.Deleted[sec], key)
	}
	for _, ch := range f.changes[i:] {
		for _, r := range ch.refs {
			switch r.sec {
			case secDevices:
				d.Devices = put(d.Devices, s.Devices, r.key, func(k string) { del("devices", k) })
			case secTokens:
				d.Tokens = put(d.Tokens, s.Tokens, r.key, func(k string) { del("tokens", k) })
			case secOperators:
				d.Operators = put(d.Operators, s.Operators, r.key, func(k string) { del("operators", k) })
			case secApps:
				d.Apps = put(d.Apps, s.Apps, r.key, func(k string) { del("apps", k) })
			case secRollouts:
				d.Rollouts = put(d.Rollouts, s.Rollouts, r.key, func(k string) { del("rollouts", k) })
			case secPolicies:
				d.Policies = put(d.Policies, s.Policies, r.key, func(k string) { del("policies", k) })
			case secRevoked:
				d.Revoked = put(d.Revoked, s.Revoked, r.key, func(k string) { del("revoked", k) })
			}
		}
	}
	// Marshalled under the lock: the values are the FSM's own, which
	// later commands change in place.
	b, err = json.Marshal(d)
	return b, s.Version, err == nil, err
}

// put copies entry key of src into dst (creating it), or reports it
// deleted. A key touched twice is copied once.
func put[V any](dst, src map[string]V, key string, deleted func(string)) map[string]V {
	v, ok := src[key]
	if !ok {
		deleted(key)
		return dst
	}
	if dst == nil {
		dst = map[string]V{}
	}
	dst[key] = v
	return dst
}

// ApplyDelta returns the spec that d makes of s. s is left as it was (its
// entries are shared with the result, so neither may be changed in place
// afterwards: specs held by nodes are read-only). It fails if d does not
// start at s's version or belongs to another fleet.
func (s *Spec) ApplyDelta(d *SpecDelta) (*Spec, error) {
	if d.From != s.Version {
		return nil, fmt.Errorf("spec delta from version %d does not apply to version %d", d.From, s.Version)
	}
	if s.ClusterID != "" && d.ClusterID != s.ClusterID {
		return nil, fmt.Errorf("spec delta is for fleet %q, not %q", d.ClusterID, s.ClusterID)
	}
	if d.To < d.From {
		return nil, fmt.Errorf("spec delta goes back from version %d to %d", d.From, d.To)
	}
	n := &Spec{Version: d.To, ClusterID: d.ClusterID, CACertPEM: d.CACertPEM, Gossip: d.Gossip,
		Devices: merge(s.Devices, d.Devices, d.Deleted["devices"]), Tokens: merge(s.Tokens, d.Tokens, d.Deleted["tokens"]),
		Operators: merge(s.Operators, d.Operators, d.Deleted["operators"]), Apps: merge(s.Apps, d.Apps, d.Deleted["apps"]),
		Rollouts: merge(s.Rollouts, d.Rollouts, d.Deleted["rollouts"]), Policies: merge(s.Policies, d.Policies, d.Deleted["policies"]),
		Revoked: merge(s.Revoked, d.Revoked, d.Deleted["revoked"])}
	fill(n)
	return n, nil
}

// merge returns a new map: base with the changed entries set and the
// deleted ones removed. base itself is returned when nothing changed.
func merge[V any](base, changed map[string]V, deleted []string) map[string]V {
	if len(changed) == 0 && len(deleted) == 0 {
		return base
	}
	out := make(map[string]V, len(base)+len(changed))
	maps.Copy(out, base)
	maps.Copy(out, changed)
	for _, k := range deleted {
		delete(out, k)
	}
	return out
}

// DecodeDelta parses a delta as served by a gateway.
func DecodeDelta(b []byte) (*SpecDelta, error) {
	var d SpecDelta
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("spec delta: %w", err)
	}
	return &d, nil
}
