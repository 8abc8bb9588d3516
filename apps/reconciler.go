package apps

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"
)

// AppStatus is one application's state on this device, as the node
// gossips it.
type AppStatus struct {
	Version string `json:"version"`
	State   State  `json:"state"`
	Message string `json:"message,omitempty"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
}

// Failing lists the applications whose state means the device is in
// error (failed or unhealthy), sorted.
func Failing(statuses map[string]AppStatus) []string {
	var out []string
	for app, st := range statuses {
		if st.State.Failing() {
			out = append(out, app)
		}
	}
	slices.Sort(out)
	return out
}

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Node is this device, as selectors and env valueFrom see it.
	Node NodeInfo
	// Drivers run each deployment type; a type with no driver makes its
	// applications fail with a message that says so.
	Drivers map[DeploymentType]Driver
	// Store keeps the desired set across restarts; nil keeps it in memory
	// only.
	Store *LastApplied
	// Policy is the fleet policy manifests are checked against before they
	// run; the spec checked them at commit, this is the device's own guard.
	Policy ValidateOptions
	// ResyncInterval is how often the device is compared with the desired
	// set even when nothing changed, which repairs drift. Default 30 s.
	ResyncInterval time.Duration
	// OnStatusChange, if set, is called (without locks held, from the
	// reconciler's goroutines) after an application's status changed, so
	// the node can gossip it. It must not block.
	OnStatusChange func(app string, st AppStatus)
	// HTTPClient runs httpGet health checks; nil means a client without
	// keep-alives.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Reconciler makes this device run the applications of the desired set
// whose selectors match it, and keeps them running and checked. See
// DESIGN.md for its invariants.
type Reconciler struct {
	cfg     ReconcilerConfig
	log     *slog.Logger
	http    *http.Client
	trigger chan struct{}
	passMu  sync.Mutex // one pass at a time

	mu      sync.Mutex
	policy  ValidateOptions
	node    NodeInfo
	desired Desired
	known   bool // desired came from the spec or from disk
	status  map[string]*appState
	now     func() time.Time
}

// appState is the reconciler's record of one application.
type appState struct {
	AppStatus
	key    InstanceKey
	hash   string
	probe  *probe   // running health checks, nil if none
	driver Status   // what the driver last said
	health *healthy // last health result, nil before the first
}

type healthy struct {
	ok      bool
	message string
}

// NewReconciler returns a reconciler for cfg.Node. When cfg.Store holds a
// desired set, the reconciler starts from it: after a reboot with no
// gateway reachable, the device runs what it was last told to.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if cfg.Node.Name == "" {
		return nil, errors.New("reconciler: Node.Name is required")
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	r := &Reconciler{
		cfg:     cfg,
		policy:  cfg.Policy,
		log:     cfg.Logger,
		http:    cfg.HTTPClient,
		trigger: make(chan struct{}, 1),
		node:    cloneNode(cfg.Node),
		status:  map[string]*appState{},
		now:     time.Now,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "apps.reconciler")
	if r.http == nil {
		r.http = &http.Client{
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.Store != nil {
		d, ok, err := cfg.Store.Load()
		if err != nil {
			// A whole unreadable file leaves the reconciler waiting for
			// the spec, removing nothing; a file with some bad manifests
			// still runs the good ones: some apps beat none.
			r.log.Error("last-applied store unreadable", "path", cfg.Store.Path(), "err", err)
		}
		if ok {
			r.desired, r.known = d, true
			r.log.Info("loaded last-applied applications", "index", d.Index, "apps", len(d.Apps))
		}
	}
	return r, nil
}

// SetDesired replaces the desired set (every application in the spec, for
// all devices) and triggers a pass. The set is persisted first; an error
// means it could not be, and the set is applied all the same.
func (r *Reconciler) SetDesired(d Desired) error {
	seen := map[string]bool{}
	cp := Desired{Index: d.Index}
	for _, m := range d.Apps {
		if m == nil {
			continue
		}
		if seen[m.Metadata.Name] {
			return fmt.Errorf("desired set at index %d: application %q appears twice", d.Index, m.Metadata.Name)
		}
		seen[m.Metadata.Name] = true
		cp.Apps = append(cp.Apps, m.Clone())
	}
	r.mu.Lock()
	same := r.known && r.desired.Index == cp.Index && sameApps(r.desired.Apps, cp.Apps)
	r.desired, r.known = cp, true
	r.mu.Unlock()
	var err error
	if !same && r.cfg.Store != nil {
		if err = r.cfg.Store.Save(cp); err != nil {
			err = fmt.Errorf("save last-applied applications: %w", err)
		}
	}
	r.Trigger()
	return err
}

// Desired returns the desired set the reconciler works from.
func (r *Reconciler) Desired() Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired
}

// SetNode updates what the device looks like (its labels, say) and
// triggers a pass.
func (r *Reconciler) SetNode(n NodeInfo) {
	r.mu.Lock()
	r.node = cloneNode(n)
	r.mu.Unlock()
	r.Trigger()
}

// SetPolicy replaces the fleet policy manifests are checked against (the
// security policy can change while the device runs) and triggers a pass.
func (r *Reconciler) SetPolicy(p ValidateOptions) {
	r.mu.Lock()
	changed := r.policy != p
	r.policy = p
	r.mu.Unlock()
	if changed {
		r.Trigger()
	}
}

// Trigger asks Run for a pass now. It never blocks; triggers that arrive
// during a pass coalesce into one more pass.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Status returns every application this device is meant to run, or still
// runs, with its status.
func (r *Reconciler) Status() map[string]AppStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]AppStatus, len(r.status))
	for app, s := range r.status {
		out[app] = s.AppStatus
	}
	return out
}

// Run reconciles at start, on every Trigger and every ResyncInterval,
// until ctx ends; then it stops the health checks and returns ctx's error.
func (r *Reconciler) Run(ctx context.Context) error {
	defer r.stopProbes()
	t := time.NewTicker(r.cfg.ResyncInterval)
	defer t.Stop()
	for {
		if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass had errors", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.trigger:
		case <-t.C:
		}
	}
}

// Reconcile runs one pass: it creates what is missing, replaces what
// changed, removes what is no longer wanted (only what the drivers own),
// and (re)starts health checks. It returns every error met; one
// application's failure does not stop the others.
func (r *Reconciler) Reconcile(ctx context.Context) error {
	r.passMu.Lock()
	defer r.passMu.Unlock()

	r.mu.Lock()
	node, desired, known, policy := r.node, r.desired, r.known, r.policy
	r.mu.Unlock()
	if !known {
		// Never heard from the spec nor from disk: do not remove what
		// may be a previous life's applications until told.
		return nil
	}

	type want struct {
		inst    Instance
		invalid error
	}
	wanted := map[InstanceKey]want{}
	wantedApps := map[string]bool{}
	for _, m := range desired.Apps {
		if !m.Spec.Selector.Matches(node) {
			continue
		}
		key := InstanceKey{Type: m.Spec.Deployment.Type, App: m.Metadata.Name}
		wantedApps[key.App] = true
		if err := m.Validate(policy); err != nil {
			wanted[key] = want{inst: Instance{App: key.App, Version: m.Metadata.Version, Type: key.Type}, invalid: err}
			continue
		}
		inst, err := Resolve(m, node)
		wanted[key] = want{inst: inst, invalid: err}
	}

	var errs []error
	// Remove what no driver should run any more. An application that
	// is wanted but invalid here is left as it runs.
	for _, typ := range slices.Sorted(maps.Keys(r.cfg.Drivers)) {
		drv := r.cfg.Drivers[typ]
		observed, err := drv.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s driver: %w", typ, err))
			continue
		}
		for _, o := range observed {
			key := InstanceKey{Type: typ, App: o.App}
			if _, ok := wanted[key]; ok {
				continue
			}
			r.log.Info("removing application", "app", o.App, "type", typ, "version", o.Version)
			if err := drv.Remove(ctx, o.App); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", o.App, err))
				continue
			}
			if !wantedApps[o.App] {
				r.forget(o.App)
			}
		}
	}
	r.mu.Lock()
	for app := range r.status {
		if !wantedApps[app] {
			r.forgetLocked(app)
		}
	}
	r.mu.Unlock()

	for _, key := range slices.SortedFunc(maps.Keys(wanted), func(a, b InstanceKey) int {
		return cmp.Compare(a.App, b.App)
	}) {
		w := wanted[key]
		if w.invalid != nil {
			r.setDriverStatus(w.inst, Status{State: StateFailed, Message: w.invalid.Error()})
			errs = append(errs, w.invalid)
			continue
		}
		if err := r.ensure(ctx, w.inst); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key.App, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) ensure(ctx context.Context, inst Instance) error {
	drv, ok := r.cfg.Drivers[inst.Type]
	if !ok {
		err := fmt.Errorf("no %s driver on this device: %w", inst.Type, ErrUnsupported)
		r.setDriverStatus(inst, Status{State: StateFailed, Message: err.Error()})
		return err
	}
	r.mu.Lock()
	if s := r.status[inst.App]; s == nil || s.hash != inst.Hash {
		r.setLocked(inst, Status{State: StatePending})
	}
	r.mu.Unlock()
	st, err := drv.Ensure(ctx, inst, func(p Status) { r.setDriverStatus(inst, p) })
	if err != nil && st.State != StateFailed {
		st = Status{State: StateFailed, Message: err.Error()}
	}
	r.setDriverStatus(inst, st)
	if st.State == StateRunning && inst.HealthCheck != nil {
		r.startProbe(drv, inst)
	} else {
		r.stopProbe(inst.App)
	}
	return err
}

// setDriverStatus records what the driver says and derives the status.
func (r *Reconciler) setDriverStatus(inst Instance, st Status) {
	r.mu.Lock()
	changed, out := r.setLocked(inst, st)
	r.mu.Unlock()
	if changed {
		r.notify(inst.App, out)
	}
}

// setLocked records driver status st for inst and returns whether the
// derived status changed.
func (r *Reconciler) setLocked(inst Instance, st Status) (bool, AppStatus) {
	s := r.status[inst.App]
	if s == nil || s.hash != inst.Hash || s.key != inst.Key() {
		if s != nil && s.probe != nil {
			s.probe.stop()
		}
		s = &appState{key: inst.Key(), hash: inst.Hash}
		s.Version = inst.Version
		r.status[inst.App] = s
	}
	s.driver = st
	if st.State != StateRunning {
		s.health = nil
	}
	return r.deriveLocked(s)
}

// deriveLocked computes the published status from the driver's status and
// the health checks.
func (r *Reconciler) deriveLocked(s *appState) (bool, AppStatus) {
	next := s.driver
	if next.State == StateRunning && s.probe != nil {
		switch {
		case s.health == nil:
			next = Status{State: StateStarting, Message: "waiting for the first health check"}
		case s.health.ok:
			next = Status{State: StateHealthy}
		default:
			next = Status{State: StateUnhealthy, Message: s.health.message}
		}
	}
	if next.State == s.State && next.Message == s.Message {
		return false, s.AppStatus
	}
	if next.State != s.State {
		s.Since = r.now()
	}
	s.State, s.Message = next.State, next.Message
	return true, s.AppStatus
}

func (r *Reconciler) notify(app string, st AppStatus) {
	r.log.Info("application status", "app", app, "version", st.Version, "state", st.State, "message", st.Message)
	if r.cfg.OnStatusChange != nil {
		r.cfg.OnStatusChange(app, st)
	}
}

func (r *Reconciler) forget(app string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(app)
}

func (r *Reconciler) forgetLocked(app string) {
	if s := r.status[app]; s != nil {
		if s.probe != nil {
			s.probe.stop()
		}
		delete(r.status, app)
	}
}

func (r *Reconciler) stopProbes() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.status {
		if s.probe != nil {
			s.probe.stop()
			s.probe = nil
		}
	}
}

func cloneNode(n NodeInfo) NodeInfo {
	n.Labels = maps.Clone(n.Labels)
	return n
}

func sameApps(a, b []*Manifest) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
