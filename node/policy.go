package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/hardening"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// HardeningConfig configures how a node checks (and may apply) the fleet's
// security policy.
type HardeningConfig struct {
	// Root is the filesystem the policy is checked against; "/" (the
	// default) is the running system. Test fleets use scratch roots.
	Root string
	// Interval is how often the node checks itself. Default 10 minutes.
	Interval time.Duration
}

// Validate checks the hardening settings.
func (c HardeningConfig) Validate() error {
	var errs []error
	if c.Root != "" && !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("hardening.root: %q must be an absolute path", c.Root))
	}
	if c.Interval < 0 {
		errs = append(errs, errors.New("hardening.interval: must not be negative"))
	}
	return errors.Join(errs...)
}

// policyDocID is the spec document holding the fleet's security policy.
const policyDocID = "security"

// policyDoc is the fleet security policy as the spec stores it.
type policyDoc struct {
	Name string `json:"name"`
	// YAML is the policy as the operator wrote it.
	YAML string `json:"yaml"`
	// ApplyRoles are the roles whose devices apply the policy, not only
	// check it.
	ApplyRoles []string  `json:"apply_roles,omitempty"`
	Updated    time.Time `json:"updated"`
}

// fleetPolicy returns the policy in the spec, if any.
func (n *Node) fleetPolicy() (*policyDoc, *hardening.Policy, error) {
	var raw json.RawMessage
	n.withSpec(func(s *consensus.Spec) { raw = s.Policies[policyDocID] })
	if raw == nil {
		return nil, nil, nil
	}
	var d policyDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, nil, err
	}
	p, err := hardening.ParsePolicy([]byte(d.YAML))
	return &d, p, err
}

// allowPrivileged says whether the fleet's security policy allows
// privileged containers: only when a policy exists and says so.
func (n *Node) allowPrivileged() bool {
	_, p, err := n.fleetPolicy()
	return err == nil && p != nil && p.Spec.Containers.AllowPrivileged != nil && *p.Spec.Containers.AllowPrivileged
}

// policyLoop checks this node against the fleet policy whenever the policy
// changes and every Interval, applies it where the node's role is listed,
// and gossips the score and failing rules.
func (n *Node) policyLoop() {
	defer n.wg.Done()
	interval := n.cfg.Hardening.Interval
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	var lastPolicy string
	for {
		doc, p, err := n.fleetPolicy()
		key := ""
		if doc != nil {
			key = doc.Updated.String() + doc.YAML + strings.Join(doc.ApplyRoles, ",")
		}
		force := false
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			force = true
		case <-poll.C:
		}
		if n.reconciler != nil {
			n.reconciler.SetPolicy(apps.ValidateOptions{AllowPrivileged: n.allowPrivileged()})
		}
		if key == lastPolicy && !force {
			continue
		}
		lastPolicy = key
		if doc == nil {
			n.setCompliance(nil)
			continue
		}
		if err != nil {
			n.log.Error("the fleet's security policy does not parse on this node", "err", err)
			continue
		}
		n.checkPolicy(doc, p)
	}
}

func (n *Node) checkPolicy(doc *policyDoc, p *hardening.Policy) {
	root := n.cfg.Hardening.Root
	opts := hardening.Options{FleetPorts: n.fleetPorts()}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Minute)
	defer cancel()
	if slices.Contains(doc.ApplyRoles, n.state.Role) {
		res, err := hardening.Apply(ctx, p, root, false, opts)
		if err != nil {
			n.log.Error("applying the security policy failed", "err", err)
		} else if res != nil {
			n.log.Info("security policy applied", "policy", doc.Name)
		}
	}
	rep, err := hardening.Check(ctx, p, root, opts)
	if err != nil {
		n.log.Error("checking the security policy failed", "err", err)
		return
	}
	n.setCompliance(&mesh.Compliance{Policy: doc.Name, Score: rep.Score, Failing: rep.Failing(), Checked: time.Now().UTC()})
}

func (n *Node) setCompliance(c *mesh.Compliance) {
	n.complianceMu.Lock()
	n.compliance = c
	n.complianceMu.Unlock()
	n.kickHealth()
}

func (n *Node) currentCompliance() *mesh.Compliance {
	n.complianceMu.Lock()
	defer n.complianceMu.Unlock()
	return n.compliance
}

// fleetPorts are this node's own listening ports, which the firewall must
// keep open.
func (n *Node) fleetPorts() []hardening.FleetPort {
	ports := []hardening.FleetPort{
		{Name: "fleetmesh gossip", Port: n.state.GossipPort, Protocol: "tcp"},
		{Name: "fleetmesh gossip", Port: n.state.GossipPort, Protocol: "udp"},
		{Name: "fleetmesh API", Port: portOf(n.apiAddr), Protocol: "tcp"},
	}
	if n.store != nil {
		ports = append(ports, hardening.FleetPort{Name: "fleetmesh raft", Port: portOf(n.store.Addr()), Protocol: "tcp"})
	}
	return ports
}

func (n *Node) handlePolicySet(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %s", describeJSONError(err)))
		return
	}
	p, err := hardening.ParsePolicy(data)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	var roles []string
	if v := r.URL.Query().Get("apply_roles"); v != "" {
		for _, role := range strings.Split(v, ",") {
			if !consensus.ValidRole(role) {
				writeError(w, http.StatusBadRequest, fmt.Errorf("apply_roles: %q is not one of %v", role, consensus.Roles))
				return
			}
			roles = append(roles, role)
		}
	}
	noteAudit(r, "set security policy %s (applied by roles %v)", p.Metadata.Name, roles)
	doc, _ := json.Marshal(policyDoc{Name: p.Metadata.Name, YAML: string(data), ApplyRoles: roles, Updated: time.Now().UTC()})
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpPutDocument, Kind: "policies", ID: policyDocID, Doc: doc})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}

func (n *Node) handlePolicyGet(w http.ResponseWriter, r *http.Request) {
	doc, _, err := n.fleetPolicy()
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("stored policy: %w", err))
		return
	}
	if doc == nil {
		writeError(w, http.StatusNotFound, errors.New("the fleet has no security policy: set one with 'fleetmesh policy set -f FILE'"))
		return
	}
	out := api.PolicyStatus{Name: doc.Name, YAML: doc.YAML, ApplyRoles: doc.ApplyRoles, Updated: doc.Updated, Nodes: []api.Compliance{}}
	for _, m := range n.mesh.Members() {
		c := api.Compliance{Node: m.Name, Role: m.Role, Online: m.Alive}
		if m.Health.Compliance != nil && m.Health.Compliance.Policy == doc.Name {
			c.Score, c.Failing, c.Checked = m.Health.Compliance.Score, m.Health.Compliance.Failing, m.Health.Compliance.Checked
			c.Reported = true
		}
		out.Nodes = append(out.Nodes, c)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Node < out.Nodes[j].Node })
	writeJSON(w, http.StatusOK, out)
}
