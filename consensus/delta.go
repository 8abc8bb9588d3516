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

// secNames are the sections' JSON names, as in Spec and SpecDelta.Deleted.
var secNames = [...]string{secDevices: "devices", secTokens: "tokens", secOperators: "operators",
	secApps: "apps", secRollouts: "rollouts", secPolicies: "policies", secRevoked: "revoked"}

// SpecDelta is the change of the spec from version From to Changed.Version:
// Changed holds the scalar fields as of that version and every map entry
// that changed in between, with its value then; Deleted lists the keys
// removed, by section name.
type SpecDelta struct {
	From    uint64              `json:"from"`
	Changed Spec                `json:"changed"`
	Deleted map[string][]string `json:"deleted,omitempty"`
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
	case OpPruneTokens:
		r := make([]ref, len(c.IDs))
		for i, id := range c.IDs {
			r[i] = ref{secTokens, id}
		}
		return r
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
	d := SpecDelta{From: since, Changed: Spec{Version: s.Version, ClusterID: s.ClusterID, CACertPEM: s.CACertPEM, Gossip: s.Gossip, Level: s.Level}}
	c := &d.Changed
	i := sort.Search(len(f.changes), func(i int) bool { return f.changes[i].index > since })
	for _, ch := range f.changes[i:] {
		for _, r := range ch.refs {
			var found bool
			switch r.sec {
			case secDevices:
				c.Devices, found = put(c.Devices, s.Devices, r.key)
			case secTokens:
				c.Tokens, found = put(c.Tokens, s.Tokens, r.key)
			case secOperators:
				c.Operators, found = put(c.Operators, s.Operators, r.key)
			case secApps:
				c.Apps, found = put(c.Apps, s.Apps, r.key)
			case secRollouts:
				c.Rollouts, found = put(c.Rollouts, s.Rollouts, r.key)
			case secPolicies:
				c.Policies, found = put(c.Policies, s.Policies, r.key)
			case secRevoked:
				c.Revoked, found = put(c.Revoked, s.Revoked, r.key)
			}
			if !found {
				if d.Deleted == nil {
					d.Deleted = map[string][]string{}
				}
				d.Deleted[secNames[r.sec]] = append(d.Deleted[secNames[r.sec]], r.key)
			}
		}
	}
	// Marshalled under the lock: the values are the FSM's own, which
	// later commands change in place.
	b, err = json.Marshal(d)
	return b, s.Version, err == nil, err
}

// put copies entry key of src into dst (creating dst), or reports that src
// has no such entry (it was deleted).
func put[V any](dst, src map[string]V, key string) (map[string]V, bool) {
	v, ok := src[key]
	if !ok {
		return dst, false
	}
	if dst == nil {
		dst = map[string]V{}
	}
	dst[key] = v
	return dst, true
}

// ApplyDelta returns the spec that d makes of s. s is left as it was (its
// entries are shared with the result, so neither may be changed in place
// afterwards: specs held by nodes are read-only). It fails if d does not
// start at s's version or belongs to another fleet.
func (s *Spec) ApplyDelta(d *SpecDelta) (*Spec, error) {
	c := &d.Changed
	switch {
	case d.From != s.Version:
		return nil, fmt.Errorf("spec delta from version %d does not apply to version %d", d.From, s.Version)
	case s.ClusterID != "" && c.ClusterID != s.ClusterID:
		return nil, fmt.Errorf("spec delta is for fleet %q, not %q", c.ClusterID, s.ClusterID)
	case c.Version < d.From:
		return nil, fmt.Errorf("spec delta goes back from version %d to %d", d.From, c.Version)
	}
	del := func(sec int) []string { return d.Deleted[secNames[sec]] }
	n := &Spec{Version: c.Version, ClusterID: c.ClusterID, CACertPEM: c.CACertPEM, Gossip: c.Gossip, Level: c.Level,
		Devices:   merge(s.Devices, c.Devices, del(secDevices)),
		Tokens:    merge(s.Tokens, c.Tokens, del(secTokens)),
		Operators: merge(s.Operators, c.Operators, del(secOperators)),
		Apps:      merge(s.Apps, c.Apps, del(secApps)),
		Rollouts:  merge(s.Rollouts, c.Rollouts, del(secRollouts)),
		Policies:  merge(s.Policies, c.Policies, del(secPolicies)),
		Revoked:   merge(s.Revoked, c.Revoked, del(secRevoked))}
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
