package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Errors a command can be refused with. The FSM decides them
// deterministically, so every gateway refuses the same command the same way.
var (
	ErrTokenUnknown   = errors.New("join token unknown")
	ErrTokenExpired   = errors.New("join token expired")
	ErrTokenUsedUp    = errors.New("join token has no uses left")
	ErrTokenRevoked   = errors.New("join token revoked")
	ErrTokenRole      = errors.New("join token is for another role")
	ErrNameTaken      = errors.New("a device with this name is already in the fleet")
	ErrDeviceUnknown  = errors.New("no such device")
	ErrEvicted        = errors.New("device was evicted; join again with a new token and a new name")
	ErrInitialized    = errors.New("fleet already initialized")
	ErrBadCommand     = errors.New("bad command")
	ErrOperatorGone   = errors.New("no such operator credential")
	ErrAppUnknown     = errors.New("no such application")
	ErrAlreadyRevoked = errors.New("already revoked")
	ErrAppVersion     = errors.New("this version of the application was already deployed with a different manifest; bump metadata.version")
	// ErrFSMTooOld: the log holds a command newer than this binary's FSM
	// applies. The FSM stops there rather than skip it (see fsm.halted).
	ErrFSMTooOld = errors.New("this gateway's fleetmesh binary is too old for the fleet's Raft log")
)

// Command ops.
const (
	OpInit           = "init"
	OpCreateToken    = "create_token"
	OpRevokeToken    = "revoke_token"
	OpJoin           = "join"
	OpRemoveDevice   = "remove_device"
	OpCreateOperator = "create_operator"
	OpRevokeOperator = "revoke_operator"
	OpPutDocument    = "put_document"
	OpDeleteDocument = "delete_document"
	OpDeployApp      = "deploy_app"
	OpRemoveApp      = "remove_app"
	OpRegisterDevice = "register_device"
	// OpPruneTokens removes the tokens listed in IDs that expired at least
	// TokenRetention before the command's Time (the leader proposes it).
	OpPruneTokens = "prune_tokens"
)

// FSMLevel is the newest set of commands this binary's FSM applies. A
// gateway gossips it, and a command of a higher level than some Raft
// server's binary applies is not proposed (see OpLevel): that server would
// refuse it and its spec would part from the others'. Level 0 is every
// command up to batched entries; 1 adds prune_tokens.
const FSMLevel = 1

// OpLevel is the FSM level that first applies op. Store.Apply stamps it on
// each command (Command.Level), so that an FSM older than a command knows it
// is too old, rather than take it for a bad command and part from the others.
func OpLevel(op string) int {
	if op == OpPruneTokens {
		return 1
	}
	return 0
}

// TokenRetention is how long a join token stays in the spec after it
// expires: meanwhile `token list` still shows it and a join with it is
// refused as expired, not unknown. Then the leader prunes it, so the spec
// (which every node copies) does not grow with every token ever made. Used-up
// and revoked tokens go the same way: every token has an expiry.
const TokenRetention = 7 * 24 * time.Hour

// Command is one change to the spec, as it goes through the Raft log. Time
// is the proposer's clock; the FSM uses it (never its own clock) so that
// every replica decides the same.
type Command struct {
	Op   string    `json:"op"`
	Time time.Time `json:"time"`
	// Level is OpLevel(Op), stamped by Store.Apply; 0 is omitted, so
	// level-0 commands are as older binaries wrote them.
	Level int `json:"level,omitempty"`

	Init     *InitCommand `json:"init,omitempty"`
	Token    *JoinToken   `json:"token,omitempty"`
	Join     *JoinCommand `json:"join,omitempty"`
	Device   *Device      `json:"device,omitempty"`
	Operator *Operator    `json:"operator,omitempty"`
	ID       string       `json:"id,omitempty"`
	// IDs are the tokens OpPruneTokens removes.
	IDs []string `json:"ids,omitempty"`
	// Documents: Kind is apps, rollouts or policies.
	Kind string          `json:"kind,omitempty"`
	Doc  json.RawMessage `json:"doc,omitempty"`
	// App is a version to deploy (OpDeployApp, ID is the app's name).
	App *AppVersion `json:"app,omitempty"`
	// Trust: RotateKey asks remove_device to rotate the gossip key too; Key
	// is the new gossip key (set by the leader alone); Serial a certificate
	// serial.
	RotateKey bool   `json:"rotate_key,omitempty"`
	Key       []byte `json:"key,omitempty"`
	Serial    string `json:"serial,omitempty"`
	// Audit, when set, is recorded in the audit log with the outcome.
	Audit *AuditEntry `json:"audit,omitempty"`
}

// InitCommand creates the fleet.
type InitCommand struct {
	ClusterID string    `json:"cluster_id"`
	CACertPEM string    `json:"ca_cert_pem"`
	Secrets   Secrets   `json:"secrets"`
	Admin     *Operator `json:"admin"`
	Device    *Device   `json:"device"`
}

// JoinCommand consumes one use of a join token and registers the device.
type JoinCommand struct {
	TokenID   string  `json:"token_id"`
	TokenHash string  `json:"token_hash"`
	Device    *Device `json:"device"`
}

// Result is what Apply returns for a committed command.
type Result struct {
	Index uint64
	Err   error
}

// fsm is the Raft state machine holding the spec and the gateway secrets.
type fsm struct {
	mu      sync.RWMutex
	spec    *Spec
	secrets Secrets
	audit   []AuditEntry
	onApply func(version uint64)
	// changes records what each applied command touched, for deltas
	// (delta.go); it covers every command after changesFloor.
	changes      []change
	changesFloor uint64
	// level is the newest command level this FSM applies: FSMLevel, or
	// lower where a test plays an older binary.
	level int
	// halted, once set, is why the FSM stopped: it met a command of a
	// higher level than it applies (a gateway rolled back to an older
	// binary, or an old one given a seat). It applies nothing after that
	// entry, so its spec is the fleet's at an older version, stale but
	// never different, and it takes no snapshot, so the log keeps every
	// entry it skipped for a newer binary to apply on its next start.
	halted error
	// isHalted mirrors halted != nil, for the write path to check without
	// waiting on mu.
	isHalted atomic.Bool
}

func newFSM() *fsm { return &fsm{spec: newSpec(), level: FSMLevel} }

// Apply applies one log entry: a command, or a batch of them (a JSON array;
// see Store.Apply), all at the entry's index. A batch returns []Result, one
// per command, in order.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) > 0 && l.Data[0] == '[' {
		var cs []Command
		if err := json.Unmarshal(l.Data, &cs); err != nil {
			return Result{Index: l.Index, Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}
		}
		out := make([]Result, len(cs))
		changed := false
		f.mu.Lock()
		for i := range cs {
			out[i] = Result{Index: l.Index, Err: f.applyLocked(&cs[i], l.Index)}
			changed = changed || out[i].Err == nil
		}
		cb := f.onApply
		f.mu.Unlock()
		if changed && cb != nil {
			cb(l.Index)
		}
		return out
	}
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return Result{Index: l.Index, Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}
	}
	f.mu.Lock()
	err := f.applyLocked(&c, l.Index)
	cb := f.onApply
	f.mu.Unlock()
	if err == nil && cb != nil {
		cb(l.Index)
	}
	return Result{Index: l.Index, Err: err}
}

// applyLocked applies c at index idx with f.mu held: the spec change, its
// record for deltas and its audit entry.
func (f *fsm) applyLocked(c *Command, idx uint64) error {
	if f.halted != nil {
		return f.halted
	}
	// (OpLevel too: entries from before the stamp carry none.)
	level := max(c.Level, OpLevel(c.Op))
	if level > f.level {
		f.halted = fmt.Errorf("%w: log entry %d holds %q, a command of FSM level %d, and this binary applies up to level %d; "+
			"its spec stays at version %d until it runs a newer fleetmesh", ErrFSMTooOld, idx, c.Op, level, f.level, f.spec.Version)
		f.isHalted.Store(true)
		return f.halted
	}
	err := f.apply(c, idx)
	if err == nil {
		f.spec.Version = idx
		f.spec.Level = max(f.spec.Level, level)
	}
	if refs := touched(c, f.spec); len(refs) > 0 {
		f.record(idx, refs)
	}
	if c.Audit != nil {
		e := *c.Audit
		e.Index, e.Time, e.Result = idx, c.Time, "ok"
		if err != nil {
			e.Result, e.Error = "error", err.Error()
		}
		f.appendAudit(e)
	}
	return err
}

// apply changes the spec for c, or changes nothing and returns why not.
func (f *fsm) apply(c *Command, idx uint64) error {
	s := f.spec
	switch c.Op {
	case OpInit:
		if s.ClusterID != "" {
			return ErrInitialized
		}
		if c.Init == nil || c.Init.Admin == nil || c.Init.Device == nil {
			return fmt.Errorf("%w: init without its parts", ErrBadCommand)
		}
		s.ClusterID = c.Init.ClusterID
		s.CACertPEM = c.Init.CACertPEM
		f.secrets = c.Init.Secrets
		s.Operators[c.Init.Admin.ID] = c.Init.Admin
		d := *c.Init.Device
		s.Devices[d.Name] = &d
		fp := KeyFingerprint(c.Init.Secrets.GossipKey)
		s.Gossip = GossipKeyring{Keys: []string{fp}, Primary: fp, Target: fp}
	case OpCreateToken:
		if c.Token == nil || c.Token.ID == "" {
			return fmt.Errorf("%w: token without id", ErrBadCommand)
		}
		t := *c.Token
		s.Tokens[t.ID] = &t
	case OpPruneTokens:
		for _, id := range c.IDs {
			if t, ok := s.Tokens[id]; ok && t.Prunable(c.Time) {
				delete(s.Tokens, id)
			}
		}
	case OpRevokeToken:
		t, ok := s.Tokens[c.ID]
		if !ok {
			return ErrTokenUnknown
		}
		if t.Revoked {
			return ErrAlreadyRevoked
		}
		t.Revoked = true
	case OpJoin:
		j := c.Join
		if j == nil || j.Device == nil {
			return fmt.Errorf("%w: join without device", ErrBadCommand)
		}
		t, ok := s.TokenFor(j.TokenID, j.TokenHash)
		if !ok {
			return ErrTokenUnknown
		}
		if old, ok := s.Devices[j.Device.Name]; ok && old.State == DeviceJoined && old.KeyID != "" &&
			old.KeyID == j.Device.KeyID && old.TokenID == t.ID && !t.Revoked {
			// The same device retrying the same join (it failed on its side
			// after the fleet committed it): answer again, spend nothing.
			old.CertSerial = j.Device.CertSerial
			return nil
		}
		switch {
		case t.Revoked:
			return ErrTokenRevoked
		case !t.Expires.IsZero() && !c.Time.Before(t.Expires):
			return ErrTokenExpired
		case t.MaxUses > 0 && t.Uses >= t.MaxUses:
			return ErrTokenUsedUp
		case t.Role != "" && t.Role != j.Device.Role:
			return fmt.Errorf("%w: token is for %q, device asked for %q", ErrTokenRole, t.Role, j.Device.Role)
		}
		if err := nameFree(s, j.Device.Name); err != nil {
			return err
		}
		t.Uses++
		d := *j.Device
		d.State = DeviceJoined
		d.TokenID = t.ID
		d.JoinedAt = c.Time
		s.Devices[d.Name] = &d
	case OpRegisterDevice:
		d := c.Device
		if d == nil || d.Name == "" || !ValidRole(d.Role) {
			return fmt.Errorf("%w: device without name or with a bad role", ErrBadCommand)
		}
		if err := nameFree(s, d.Name); err != nil {
			return err
		}
		nd := *d
		nd.State = DeviceProvisioning
		nd.JoinedAt = time.Time{}
		s.Devices[nd.Name] = &nd
	case OpRemoveDevice:
		d, ok := s.Devices[c.ID]
		if !ok {
			return ErrDeviceUnknown
		}
		if d.Role != "gateway" && c.RotateKey {
			// Checked before anything changes: a refused command changes
			// nothing (DESIGN.md invariant 3).
			if err := checkGossipKey(c.Key); err != nil {
				return err
			}
		}
		d.State = DeviceEvicted
		revokeDevice(s, d)
		if d.Role == "gateway" {
			d.RekeyPending = true
		} else if c.RotateKey {
			if err := f.startRotation(c.Key); err != nil {
				return err
			}
		}
	case OpCreateOperator:
		if c.Operator == nil || c.Operator.ID == "" {
			return fmt.Errorf("%w: operator without id", ErrBadCommand)
		}
		o := *c.Operator
		s.Operators[o.ID] = &o
	case OpRevokeOperator:
		o, ok := s.Operators[c.ID]
		if !ok {
			return ErrOperatorGone
		}
		if o.Role == OperatorAdmin && !o.Revoked && activeAdmins(s) <= 1 {
			return ErrLastAdmin
		}
		o.Revoked = true
	case OpDeployApp:
		if c.App == nil || c.ID == "" || c.App.Version == "" || len(c.App.Manifest) == 0 {
			return fmt.Errorf("%w: deploy without name, version or manifest", ErrBadCommand)
		}
		rec, ok := s.Apps[c.ID]
		if !ok {
			rec = &AppRecord{Name: c.ID}
			s.Apps[c.ID] = rec
		}
		for _, v := range rec.Versions {
			if v.Version == c.App.Version {
				if !bytes.Equal(v.Manifest, c.App.Manifest) {
					return fmt.Errorf("%w (%s %s)", ErrAppVersion, c.ID, c.App.Version)
				}
				// Same version, same manifest: make it current again (a
				// rollback to a known version, or a repeated deploy).
				rec.Current, rec.Removed, rec.RemovedAt = v.Version, false, time.Time{}
				return nil
			}
		}
		v := *c.App
		v.Deployed = c.Time
		v.Index = idx
		rec.Versions = append(rec.Versions, v)
		rec.Current, rec.Removed, rec.RemovedAt = v.Version, false, time.Time{}
	case OpRemoveApp:
		rec, ok := s.Apps[c.ID]
		if !ok || rec.Removed {
			return fmt.Errorf("%w: %q", ErrAppUnknown, c.ID)
		}
		rec.Removed, rec.RemovedAt = true, c.Time
	case OpPutDocument, OpDeleteDocument:
		var m map[string]json.RawMessage
		switch c.Kind {
		case "rollouts":
			m = s.Rollouts
		case "policies":
			m = s.Policies
		default:
			return fmt.Errorf("%w: unknown document kind %q", ErrBadCommand, c.Kind)
		}
		if c.ID == "" {
			return fmt.Errorf("%w: document without id", ErrBadCommand)
		}
		if c.Op == OpDeleteDocument {
			if _, ok := m[c.ID]; !ok {
				return fmt.Errorf("%w: no %s document %q", ErrBadCommand, c.Kind, c.ID)
			}
			delete(m, c.ID)
		} else {
			m[c.ID] = append(json.RawMessage(nil), c.Doc...)
		}
	default:
		if ok, err := f.applyTrust(c); ok {
			return err
		}
		return fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	return nil
}

// nameFree says whether a device may take name: not while a joined device
// holds it, and never after an eviction (a pre-registered name is free for
// its device to join under).
func nameFree(s *Spec, name string) error {
	if old, ok := s.Devices[name]; ok {
		switch old.State {
		case DeviceEvicted:
			return ErrEvicted
		case DeviceJoined:
			return ErrNameTaken
		}
	}
	return nil
}

type snapshotData struct {
	Spec    *Spec        `json:"spec"`
	Secrets Secrets      `json:"secrets"`
	Audit   []AuditEntry `json:"audit,omitempty"`
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halted != nil {
		// A snapshot would let Raft drop the entries this FSM skipped.
		return nil, f.halted
	}
	b, err := json.Marshal(snapshotData{Spec: f.spec, Secrets: f.secrets, Audit: f.auditTail()})
	if err != nil {
		return nil, err
	}
	return &snapshot{data: b}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var d snapshotData
	if err := json.NewDecoder(rc).Decode(&d); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	if d.Spec == nil {
		d.Spec = newSpec()
	}
	if d.Spec.Level > f.level { // (f.level is set once, at construction)
		// A snapshot the leader sent (Open checks the local ones): the
		// state stays as it was, and halted says why it goes no further.
		err := fmt.Errorf("%w: a snapshot at version %d holds commands of FSM level %d, and this binary applies up to level %d: run a newer fleetmesh",
			ErrFSMTooOld, d.Spec.Version, d.Spec.Level, f.level)
		f.mu.Lock()
		f.halted = err
		f.isHalted.Store(true)
		f.mu.Unlock()
		return err
	}
	fill(d.Spec)
	f.mu.Lock()
	// The snapshot is the whole state at its index, from a leader (or
	// this node) whose FSM applied every entry up to it: whatever this FSM
	// stopped at, it is past it now.
	f.halted = nil
	f.isHalted.Store(false)
	f.spec = d.Spec
	f.secrets = d.Secrets
	f.audit = d.Audit
	f.changes, f.changesFloor = nil, d.Spec.Version
	cb := f.onApply
	v := d.Spec.Version
	f.mu.Unlock()
	if cb != nil {
		cb(v)
	}
	return nil
}

type snapshot struct{ data []byte }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
