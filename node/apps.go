package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/api"
)

// AppsConfig configures the application runtime of a node.
type AppsConfig struct {
	// Disabled turns the runtime off: the node runs no applications.
	Disabled bool
	// ContainerPrefix namespaces containers: when set, they are named
	// "<prefix><node>-fleetmesh-<app>" and labelled with node "<prefix><node>",
	// so fleets sharing one Docker engine (test fleets, the demo) never see
	// each other's containers. A real device leaves it empty.
	ContainerPrefix string
	// ResyncInterval is how often the device is compared with the spec
	// even when nothing changed (drift repair). Default 30 s.
	ResyncInterval time.Duration
}

var prefixRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$`)

// Validate checks the runtime settings.
func (c AppsConfig) Validate() error {
	var errs []error
	if c.ContainerPrefix != "" && !prefixRE.MatchString(c.ContainerPrefix) {
		errs = append(errs, fmt.Errorf("apps.container_prefix: %q must be up to 32 letters, digits, '_', '.', '-'", c.ContainerPrefix))
	}
	if c.ResyncInterval < 0 {
		errs = append(errs, errors.New("apps.resync_interval: must not be negative"))
	}
	return errors.Join(errs...)
}

// startApps builds the reconciler with the drivers this host can run. The
// reconciler first loads the last applied set from the data dir, so a
// device that reboots with no gateway reachable runs its apps again.
func (n *Node) startApps() {
	if n.cfg.Apps.Disabled {
		return
	}
	log := n.log.With("component", "apps")
	drivers := map[apps.DeploymentType]apps.Driver{}
	namePrefix := ""
	if p := n.cfg.Apps.ContainerPrefix; p != "" {
		namePrefix = p + n.state.Name + "-"
	}
	if d, err := apps.NewDockerDriver(apps.DockerConfig{Node: n.cfg.Apps.ContainerPrefix + n.state.Name, NamePrefix: namePrefix, Logger: n.log}); err != nil {
		log.Warn("no Docker engine: container applications will fail on this node", "err", err)
	} else {
		drivers[apps.TypeContainer] = d
		n.docker = d
	}
	r, err := apps.NewReconciler(apps.ReconcilerConfig{
		Node:           apps.NodeInfo{Name: n.state.Name, Role: n.state.Role, Site: n.state.Site, Labels: n.state.Labels},
		Drivers:        drivers,
		Store:          apps.NewLastApplied(n.cfg.DataDir),
		Policy:         apps.ValidateOptions{AllowPrivileged: n.allowPrivileged()},
		ResyncInterval: n.cfg.Apps.ResyncInterval,
		OnStatusChange: func(string, apps.AppStatus) { n.kickHealth() },
		Logger:         n.log, // the apps package names its own components
	})
	if err != nil {
		log.Error("application runtime disabled", "err", err)
		return
	}
	n.reconciler = r
	n.wg.Add(2)
	go func() { defer n.wg.Done(); r.Run(n.ctx) }()
	go n.appsLoop()
}

// appsLoop hands the spec's applications to the reconciler whenever the
// spec version changes.
func (n *Node) appsLoop() {
	defer n.wg.Done()
	var watch <-chan struct{}
	if n.store != nil {
		watch = n.store.Watch()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last uint64
	lastApps := "-"
	for {
		if v := n.specVersion(); v != last && v > 0 {
			// Most spec changes (tokens, devices, keys) leave the apps as
			// they are: hand the set over (which the reconciler persists
			// with an fsync) only when it changed. A deployed version's
			// manifest never changes, so name@version identifies the set.
			if key := n.appsKey(); key != lastApps {
				d, err := n.desiredApps()
				if err != nil {
					n.log.Error("spec holds an unreadable application; keeping the previous set", "err", err)
				} else if err := n.reconciler.SetDesired(d); err != nil {
					n.log.Warn("applications", "err", err)
				} else {
					lastApps = key
				}
			}
			last = v
		}
		select {
		case <-n.ctx.Done():
			return
		case <-watch:
		case <-n.specCh:
		case <-t.C:
		}
	}
}

// appsKey names the spec's current application set: name@version of each.
func (n *Node) appsKey() string {
	var parts []string
	n.withSpec(func(s *consensus.Spec) {
		for name, rec := range s.Apps {
			if !rec.Removed {
				parts = append(parts, name+"@"+rec.Current)
			}
		}
	})
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// desiredApps is the spec's current applications.
func (n *Node) desiredApps() (apps.Desired, error) {
	var d apps.Desired
	var err error
	n.withSpec(func(s *consensus.Spec) {
		d.Index = s.Version
		for name, rec := range s.Apps {
			if rec.Removed {
				continue
			}
			cur := rec.CurrentVersion()
			if cur == nil {
				continue
			}
			m, perr := apps.Parse(cur.Manifest)
			if perr != nil {
				err = errors.Join(err, fmt.Errorf("app %s %s: %w", name, cur.Version, perr))
				continue
			}
			d.Apps = append(d.Apps, m)
		}
	})
	sort.Slice(d.Apps, func(i, j int) bool { return d.Apps[i].Metadata.Name < d.Apps[j].Metadata.Name })
	return d, err
}

// appHealth is this node's app statuses for gossip, and the message when
// any app fails.
func (n *Node) appHealth() ([]mesh.AppStatus, string) {
	if n.reconciler == nil {
		return nil, ""
	}
	st := n.reconciler.Status()
	out := make([]mesh.AppStatus, 0, len(st))
	for name, s := range st {
		out = append(out, mesh.AppStatus{Name: name, Version: s.Version, Status: string(s.State), Message: s.Message, Since: s.Since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	msg := ""
	if failing := apps.Failing(st); len(failing) > 0 {
		s := st[failing[0]]
		msg = fmt.Sprintf("app %s is %s", failing[0], s.State)
		if s.Message != "" {
			msg += ": " + s.Message
		}
		if len(failing) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(failing)-1)
		}
	}
	return out, msg
}

func (n *Node) kickHealth() {
	select {
	case n.healthKick <- struct{}{}:
	default:
	}
}

func (n *Node) handleAppDeploy(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %s", describeJSONError(err)))
		return
	}
	m, err := apps.ParseAndValidate(data, apps.ValidateOptions{AllowPrivileged: n.allowPrivileged()})
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("manifest: %w", err))
		return
	}
	noteAudit(r, "deployed application %s version %s", m.Metadata.Name, m.Metadata.Version)
	canon, err := json.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpDeployApp, ID: m.Metadata.Name,
		App: &consensus.AppVersion{Version: m.Metadata.Version, Manifest: canon}})
	if err != nil {
		if errors.Is(err, consensus.ErrAppVersion) {
			writeError(w, http.StatusConflict, err)
			return
		}
		writeErr(w, err)
		return
	}
	n.log.Info("application deployed", "app", m.Metadata.Name, "version", m.Metadata.Version, "index", idx)
	writeJSON(w, http.StatusCreated, api.AppDeployResult{Name: m.Metadata.Name, Version: m.Metadata.Version, Index: idx})
}

func (n *Node) handleAppRemove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	noteAudit(r, "removed application %s", name)
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRemoveApp, ID: name})
	if err != nil {
		if errors.Is(err, consensus.ErrAppUnknown) {
			writeError(w, http.StatusNotFound, err)
			return
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}

// appStatuses collects, from gossip, every device's status for each app.
func (n *Node) appStatuses() map[string][]api.AppNodeStatus {
	out := map[string][]api.AppNodeStatus{}
	for _, m := range n.mesh.Members() {
		for _, a := range m.Health.Apps {
			out[a.Name] = append(out[a.Name], api.AppNodeStatus{Node: m.Name, Version: a.Version, Status: a.Status, Message: a.Message, Since: a.Since, Online: m.Alive})
		}
	}
	return out
}

func (n *Node) handleAppList(w http.ResponseWriter, r *http.Request) {
	statuses := n.appStatuses()
	out := []api.AppSummary{}
	n.withSpec(func(s *consensus.Spec) {
		for name, rec := range s.Apps {
			if rec.Removed {
				continue
			}
			sum := api.AppSummary{Name: name, Version: rec.Current, Nodes: map[string]int{}}
			for _, v := range rec.Versions {
				sum.Versions = append(sum.Versions, v.Version)
			}
			if cur := rec.CurrentVersion(); cur != nil {
				var m struct {
					Spec struct {
						Selector   map[string]any `json:"selector"`
						Deployment struct {
							Type string `json:"type"`
						} `json:"deployment"`
					} `json:"spec"`
				}
				json.Unmarshal(cur.Manifest, &m)
				sum.Type, sum.Selector = m.Spec.Deployment.Type, m.Spec.Selector
			}
			for _, st := range statuses[name] {
				key := st.Status
				if !st.Online {
					key = "offline"
				}
				sum.Nodes[key]++
			}
			out = append(out, sum)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleAppGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var d *api.AppDetail
	n.withSpec(func(s *consensus.Spec) {
		rec, ok := s.Apps[name]
		if !ok || rec.Removed {
			return
		}
		d = &api.AppDetail{Name: name, Version: rec.Current, Nodes: []api.AppNodeStatus{}}
		for _, v := range rec.Versions {
			d.Versions = append(d.Versions, api.AppVersionInfo{Version: v.Version, Index: v.Index, Deployed: v.Deployed})
		}
		if cur := rec.CurrentVersion(); cur != nil {
			json.Unmarshal(cur.Manifest, &d.Manifest)
		}
	})
	if d == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no application named %q", name))
		return
	}
	d.Nodes = append(d.Nodes, n.appStatuses()[name]...)
	sort.Slice(d.Nodes, func(i, j int) bool { return d.Nodes[i].Node < d.Nodes[j].Node })
	writeJSON(w, http.StatusOK, d)
}
