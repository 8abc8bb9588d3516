package mesh

import (
	"encoding/json"
	"time"
)

// Device states, the seven of the architecture. A node reports its own state
// (never offline); observers mark a node offline when gossip says it is gone.
const (
	StateUnprovisioned = "unprovisioned"
	StateProvisioning  = "provisioning"
	StateInitializing  = "initializing"
	StateReady         = "ready"
	StateUpdating      = "updating"
	StateError         = "error"
	StateOffline       = "offline"
)

// States lists every device state.
var States = []string{StateUnprovisioned, StateProvisioning, StateInitializing, StateReady, StateUpdating, StateError, StateOffline}

// Identity is what a node says about itself; it changes rarely.
type Identity struct {
	Name    string            `json:"name"`
	Role    string            `json:"role"`
	Site    string            `json:"site,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	API     string            `json:"api"`
	Raft    string            `json:"raft,omitempty"`
	Version string            `json:"version"`
	// FSM is, on a gateway, the newest set of Raft commands its binary
	// applies (consensus.FSMLevel); absent (0) from older binaries.
	FSM int `json:"fsm,omitempty"`
}

// Health is a node's compact health summary.
type Health struct {
	State       string   `json:"state"`
	CPUPercent  float64  `json:"cpu_percent"`
	MemPercent  float64  `json:"mem_percent"`
	DiskPercent float64  `json:"disk_percent"`
	TempC       *float64 `json:"temp_c"`
	Load1       float64  `json:"load1"`
	UptimeSec   uint64   `json:"uptime_s"`
	SpecVersion uint64   `json:"spec_version"`
	// Leader is the Raft leader this node knows of (gateways only).
	Leader string `json:"leader,omitempty"`
	// Apps is per-application status on this node.
	Apps []AppStatus `json:"apps,omitempty"`
	// Compliance is the node's last security-policy check, if any.
	Compliance *Compliance `json:"compliance,omitempty"`
	// Message explains an error state.
	Message string `json:"message,omitempty"`
	// Keys are the fingerprints of the gossip keys this node holds, the
	// primary first (key rotation waits on them; never the keys).
	Keys []string `json:"keys,omitempty"`
}

// AppStatus is one application's status on one node.
type AppStatus struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Status  string    `json:"status"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
}

// Compliance is a node's security-policy score.
type Compliance struct {
	Policy  string    `json:"policy"`
	Score   float64   `json:"score"`
	Failing []string  `json:"failing,omitempty"`
	Checked time.Time `json:"checked"`
}

// Record is what a node gossips about itself. Seq orders records from one
// node: a higher Seq replaces a lower one. Seq starts from the wall clock in
// nanoseconds, so it keeps growing across restarts.
type Record struct {
	Identity
	Health  Health    `json:"health"`
	Seq     uint64    `json:"seq"`
	Sent    time.Time `json:"sent"`
	Leaving string    `json:"leaving,omitempty"` // reason, on graceful leave
}

func (r *Record) encode() []byte {
	b, _ := json.Marshal(r)
	return b
}

// Member is one node as this node sees it.
type Member struct {
	Record
	// Alive is memberlist's verdict: false once the node is dead or left.
	Alive bool `json:"alive"`
	// LastSeen is when this node last had evidence the member was alive.
	LastSeen time.Time `json:"last_seen"`
	// OfflineReason says why the member is offline ("left: shutdown",
	// "failed: no response to probes").
	OfflineReason string `json:"offline_reason,omitempty"`
	// Gossip is the member's gossip address.
	Gossip string `json:"gossip"`
	// proto is the highest record format the member reads (memberlist's
	// delegate protocol maximum: protoRecordHeader or 0).
	proto uint8
}

// State is the member's state as this node sees it: offline when gossip says
// it is gone, otherwise what it reports.
func (m *Member) State() string {
	if !m.Alive {
		return StateOffline
	}
	if m.Health.State == "" {
		return StateInitializing
	}
	return m.Health.State
}
