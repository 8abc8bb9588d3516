package node

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
)

// Config configures one node. The zero value of each timing means its
// default; Validate says what is wrong with the rest.
type Config struct {
	// DataDir holds the node's identity, keys, Raft state and spec copy.
	DataDir string
	// Name is the node's unique name in the fleet (defaults to the host name
	// on first start; a restart keeps the stored one).
	Name   string
	Role   string
	Site   string
	Labels map[string]string

	// Bind is the gossip address; API the HTTPS API address; RaftBind the
	// Raft transport address (gateways). Port 0 picks a free port.
	Bind     string
	API      string
	RaftBind string
	// Advertise* override the addresses peers use (behind NAT or tunnels).
	AdvertiseAPI string

	// Bootstrap creates a new fleet with this node as its first gateway.
	Bootstrap bool
	// Join is a join token; ignored when the data dir already holds an
	// identity.
	Join string
	// JoinTimeout bounds how long a join keeps trying while no fleet
	// address answers or the fleet cannot take it just now (0: until it
	// succeeds, the fleet refuses it, or the node is stopped).
	JoinTimeout time.Duration

	// HealthInterval is how often the node gossips its health.
	HealthInterval time.Duration

	Mesh mesh.Config      // timings and keys are filled by the node
	Raft consensus.Config // timings only; the node fills the rest

	// Dial, if set, is consulted before every outgoing packet or connection
	// (gossip, Raft, API calls to peers). Tests use it to partition nodes.
	Dial func(addr string) error

	// Apps configures the application runtime.
	Apps AppsConfig
	// Hardening configures the security-policy checks.
	Hardening HardeningConfig

	// MetricsOpen serves /metrics without a credential.
	MetricsOpen bool

	// CertLifetime is the lifetime of the node certificates this node
	// issues when it is a gateway (0: pki.NodeLifetime, 90 days). Only tests
	// shorten it, to watch renewal happen.
	CertLifetime time.Duration

	// Now, if set, is the clock the leader prunes join tokens by and the
	// API counts failed joins by (nil: time.Now). Only tests set it, to
	// make a week pass or to hold a throttled source throttled.
	Now func() time.Time
	// OldFSM plays a gateway binary one FSM level older than this one
	// (consensus.Config.OldFSM; level 0 gossips none, as binaries from
	// before levels did). Only tests set it, to play a mixed fleet or a
	// rollback.
	OldFSM bool

	Logger *slog.Logger
}

// DefaultHealthInterval is how often health is gossiped.
const DefaultHealthInterval = 2 * time.Second

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})$`)
)

// ValidName reports whether s is a valid node name (a DNS label).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// validSiteLabels checks a device's site and labels; errors start with the
// field path prefix given.
func validSiteLabels(prefix, site string, labels map[string]string) error {
	var errs []error
	if site != "" && !labelRE.MatchString(site) {
		errs = append(errs, fmt.Errorf("%ssite: %q must be 1-63 letters, digits, '_', '.', '-'", prefix, site))
	}
	if len(labels) > 32 {
		errs = append(errs, fmt.Errorf("%slabels: at most 32", prefix))
	}
	for k, v := range labels {
		if !labelRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("%slabels[%q]: the key must be 1-63 letters, digits, '_', '.', '-'", prefix, k))
		}
		if len(v) > 63 || strings.ContainsFunc(v, func(c rune) bool { return c < ' ' || c == 0x7f }) {
			errs = append(errs, fmt.Errorf("%slabels[%q]: the value must be at most 63 printable characters", prefix, k))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the config; errors name the setting.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir: required"))
	}
	if c.Name != "" && !ValidName(c.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be lower-case letters, digits and '-', at most 63 characters", c.Name))
	}
	if c.Role != "" && !consensus.ValidRole(c.Role) {
		errs = append(errs, fmt.Errorf("role: %q is not one of %v", c.Role, consensus.Roles))
	}
	if err := validSiteLabels("", c.Site, c.Labels); err != nil {
		errs = append(errs, err)
	}
	for flag, a := range map[string]string{"bind": c.Bind, "api": c.API, "raft": c.RaftBind} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", flag, a))
		}
	}
	if c.JoinTimeout < 0 {
		errs = append(errs, fmt.Errorf("join-timeout: %v must not be negative (0 keeps trying)", c.JoinTimeout))
	}
	if c.Bootstrap && c.Join != "" {
		errs = append(errs, errors.New("bootstrap and join: choose one: --bootstrap creates a new fleet, --join joins an existing one"))
	}
	if c.Bootstrap && c.Role != "" && c.Role != "gateway" {
		errs = append(errs, fmt.Errorf("role: a fleet is bootstrapped by a gateway, not a %s", c.Role))
	}
	if err := c.Apps.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Hardening.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HealthInterval < 0 {
		errs = append(errs, errors.New("health-interval: must be positive"))
	}
	return errors.Join(errs...)
}

// inherit takes what the data dir remembers for every setting left unset,
// and refuses settings that contradict it: a data dir is one device.
func (c *Config) inherit(p *persisted) error {
	var errs []error
	if c.Name != "" && c.Name != p.Name {
		errs = append(errs, fmt.Errorf("name: this data dir belongs to node %q, not %q; leave --name out or use another --data-dir", p.Name, c.Name))
	}
	if c.Role != "" && c.Role != p.Role {
		errs = append(errs, fmt.Errorf("role: node %s is a %s; a device's role cannot change (evict it and join again with a new name)", p.Name, p.Role))
	}
	if c.Site != "" && c.Site != p.Site {
		errs = append(errs, fmt.Errorf("site: node %s is at site %q; a device's site cannot change on restart", p.Name, p.Site))
	}
	if c.Labels != nil && !maps.Equal(c.Labels, p.Labels) {
		errs = append(errs, fmt.Errorf("label: node %s has labels %v; labels cannot change on restart", p.Name, p.Labels))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, f := range []struct {
		dst *string
		v   string
	}{{&c.Bind, p.Bind}, {&c.API, p.API}, {&c.RaftBind, p.Raft}, {&c.AdvertiseAPI, p.AdvertiseAPI}} {
		if *f.dst == "" {
			*f.dst = f.v
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Bind == "" {
		c.Bind = "0.0.0.0:7946"
	}
	// The API and Raft follow the gossip address's host: other devices
	// reach the API for spec copies, forwarded writes and joins (a join
	// token carries it), so it must not default to loopback while gossip
	// faces the network.
	host, _, _ := net.SplitHostPort(c.Bind)
	if c.API == "" {
		c.API = net.JoinHostPort(host, "7400")
	}
	if c.RaftBind == "" {
		c.RaftBind = net.JoinHostPort(host, "7947")
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.Hardening.Root == "" {
		c.Hardening.Root = "/"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}
