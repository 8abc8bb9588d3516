// Package api is fleetmesh's public HTTP API as a Go client and its wire
// types. Operator commands reach a node only through it, exactly as any user
// would. It imports no other fleetmesh package, so it can be vendored alone.
package api

import "time"

// Response headers every read carries (Consul's manner).
const (
	HeaderIndex       = "X-Fleetmesh-Index"        // spec version of the answer
	HeaderLastContact = "X-Fleetmesh-Last-Contact" // ms since this node heard from the leader
	HeaderKnownLeader = "X-Fleetmesh-Known-Leader" // whether this node knows a leader
)

// Error is every error body: {"error": "..."}.
type Error struct {
	Error string `json:"error"`
}

// Health is GET /v1/health: this node. Without a credential only State
// and UptimeSec are filled.
type Health struct {
	Name        string  `json:"name,omitempty"`
	Role        string  `json:"role,omitempty"`
	Site        string  `json:"site,omitempty"`
	State       string  `json:"state"`
	Version     string  `json:"version,omitempty"`
	ClusterID   string  `json:"cluster_id,omitempty"`
	SpecVersion uint64  `json:"spec_version,omitempty"`
	Leader      string  `json:"leader,omitempty"`
	RaftState   string  `json:"raft_state,omitempty"`
	Members     int     `json:"members,omitempty"`
	UptimeSec   float64 `json:"uptime_s"`
}

// Fleet is GET /v1/fleet: the summary of the fleet as this node sees it.
type Fleet struct {
	ClusterID     string         `json:"cluster_id"`
	Total         int            `json:"total"`
	Online        int            `json:"online"`
	Offline       int            `json:"offline"`
	Leader        string         `json:"leader"`
	SpecVersion   uint64         `json:"spec_version"`
	ByState       map[string]int `json:"by_state"`
	ByRole        map[string]int `json:"by_role"`
	BySite        map[string]int `json:"by_site"`
	Applications  int            `json:"applications"`
	Alerts        []string       `json:"alerts"`
	NonCompliant  []string       `json:"non_compliant,omitempty"`
	AnsweredBy    string         `json:"answered_by"`
	LastContactMS int64          `json:"last_contact_ms"`
}

// NodeHealth is the health part of a node.
type NodeHealth struct {
	CPUPercent  float64  `json:"cpu_percent"`
	MemPercent  float64  `json:"mem_percent"`
	DiskPercent float64  `json:"disk_percent"`
	TempC       *float64 `json:"temp_c"`
	Load1       float64  `json:"load1"`
	UptimeSec   uint64   `json:"uptime_s"`
}

// AppStatus is one application's status on one node.
type AppStatus struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Status  string    `json:"status"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
}

// Node is one device as the answering node sees it.
type Node struct {
	Name          string            `json:"name"`
	Role          string            `json:"role"`
	Site          string            `json:"site"`
	Labels        map[string]string `json:"labels,omitempty"`
	State         string            `json:"state"`
	OfflineReason string            `json:"offline_reason,omitempty"`
	API           string            `json:"api"`
	Gossip        string            `json:"gossip,omitempty"`
	LastSeen      time.Time         `json:"last_seen"`
	SpecVersion   uint64            `json:"spec_version"`
	Version       string            `json:"version"`
	Voter         *bool             `json:"voter,omitempty"`
	Health        NodeHealth        `json:"health"`
	Apps          []AppStatus       `json:"apps,omitempty"`
	Message       string            `json:"message,omitempty"`
	Compliance    *NodeCompliance   `json:"compliance,omitempty"`
}

// NodeCompliance is a device's last security-policy check.
type NodeCompliance struct {
	Policy  string    `json:"policy"`
	Score   float64   `json:"score"`
	Failing []string  `json:"failing,omitempty"`
	Checked time.Time `json:"checked"`
}

// TokenCreateRequest is POST /v1/tokens.
type TokenCreateRequest struct {
	Role string `json:"role"`
	// TTL is a Go duration ("24h"); empty means 24h.
	TTL string `json:"ttl,omitempty"`
	// Uses is how many joins the token allows; 0 means unlimited.
	Uses int `json:"uses,omitempty"`
}

// TokenCreateResponse carries the token string: the one time its secret is
// shown.
type TokenCreateResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
	Index   uint64    `json:"index"`
}

// TokenInfo is a token in listings: never its secret.
type TokenInfo struct {
	ID       string    `json:"id"`
	Role     string    `json:"role"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	MaxUses  int       `json:"max_uses"`
	Used     int       `json:"used"`
	UsesLeft int       `json:"uses_left"` // -1: unlimited
	Revoked  bool      `json:"revoked,omitempty"`
	Expired  bool      `json:"expired,omitempty"`
}

// JoinRequest is POST /v1/join: a new device presenting its join token.
type JoinRequest struct {
	TokenID string            `json:"token_id"`
	Secret  string            `json:"secret"`
	Name    string            `json:"name"`
	Role    string            `json:"role"`
	Site    string            `json:"site,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// CSR is the device's PEM certificate request; the key never leaves it.
	CSR string `json:"csr"`
	// API and Gossip are the device's addresses, to put in its certificate.
	API    string `json:"api"`
	Gossip string `json:"gossip"`
}

// JoinResponse hands the device what it needs to be a member.
type JoinResponse struct {
	ClusterID  string   `json:"cluster_id"`
	Cert       string   `json:"cert"`
	CA         string   `json:"ca"`
	GossipKeys []string `json:"gossip_keys"`
	Seeds      []string `json:"seeds"`
	Index      uint64   `json:"index"`
}

// WriteResult answers a committed write.
type WriteResult struct {
	Index uint64 `json:"index"`
}

// Compliance is one device's last check against the fleet security policy.
type Compliance struct {
	Node     string    `json:"node"`
	Role     string    `json:"role"`
	Online   bool      `json:"online"`
	Reported bool      `json:"reported"`
	Score    float64   `json:"score"`
	Failing  []string  `json:"failing,omitempty"`
	Checked  time.Time `json:"checked"`
}

// PolicyStatus is GET /v1/policy: the fleet's security policy and every
// device's compliance with it.
type PolicyStatus struct {
	Name       string       `json:"name"`
	YAML       string       `json:"yaml"`
	ApplyRoles []string     `json:"apply_roles,omitempty"`
	Updated    time.Time    `json:"updated"`
	Nodes      []Compliance `json:"nodes"`
}

// DeviceRegisterRequest is POST /v1/devices: provisioning records a device
// the fleet should expect, so a device that never comes up shows.
type DeviceRegisterRequest struct {
	Name   string            `json:"name"`
	Role   string            `json:"role"`
	Site   string            `json:"site,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Model  string            `json:"model,omitempty"`
	Serial string            `json:"serial,omitempty"`
}
