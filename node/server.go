package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/node/pki"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

func (n *Node) serve() {
	mux := http.NewServeMux()
	// Public, no credential.
	mux.HandleFunc("GET /v1/health", n.handleHealth)
	mux.HandleFunc("POST /v1/join", n.limitJoins(n.handleJoin))
	// Operator API.
	mux.HandleFunc("GET /v1/fleet", n.viewer(n.handleFleet))
	mux.HandleFunc("GET /v1/nodes", n.viewer(n.handleNodes))
	mux.HandleFunc("GET /v1/nodes/{name}", n.viewer(n.handleNode))
	mux.HandleFunc("GET /v1/tokens", n.viewer(n.handleTokenList))
	mux.HandleFunc("POST /v1/tokens", n.admin(n.handleTokenCreate))
	mux.HandleFunc("GET /v1/apps", n.viewer(n.handleAppList))
	mux.HandleFunc("POST /v1/apps", n.admin(n.handleAppDeploy))
	mux.HandleFunc("GET /v1/apps/{name}", n.viewer(n.handleAppGet))
	mux.HandleFunc("DELETE /v1/apps/{name}", n.admin(n.handleAppRemove))
	mux.HandleFunc("POST /v1/devices", n.admin(n.handleDeviceRegister))
	mux.HandleFunc("GET /v1/policy", n.viewer(n.handlePolicyGet))
	mux.HandleFunc("POST /v1/policy", n.admin(n.handlePolicySet))
	mux.HandleFunc("GET /metrics", n.handleMetrics)
	// Node to node, mutual TLS with a fleet certificate.
	mux.HandleFunc("POST /internal/v1/apply", n.member(n.forwardedWrite(n.handleApply)))
	mux.HandleFunc("POST /internal/v1/join", n.member(n.handleJoin))
	mux.HandleFunc("POST /internal/v1/raft/add", n.member(n.handleRaftAdd))
	mux.HandleFunc("GET /internal/v1/spec", n.member(n.handleSpec))
	mux.HandleFunc("GET /internal/v1/spec/delta", n.member(n.handleSpecDelta))
	n.trustRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	n.srv = &http.Server{
		Handler:           n.counted(n.metrics.instrument(mux)),
		TLSConfig:         n.id.ServerTLS(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.With("component", "http").Handler(), slog.LevelDebug),
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.ServeTLS(n.apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("api server stopped", "err", err)
		}
	}()
}

// counted serves a request unless the node is stopping, and lets stop wait
// for it (see Node.reqs).
func (n *Node) counted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.reqMu.RLock()
		if n.stopping {
			n.reqMu.RUnlock()
			writeError(w, http.StatusServiceUnavailable, ErrStopping)
			return
		}
		n.reqs.Add(1)
		n.reqMu.RUnlock()
		defer n.reqs.Done()
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, api.Error{Error: err.Error()})
}

// writeErr maps an error to its status code.
func writeErr(w http.ResponseWriter, err error) {
	var he *httpError
	var ue *unreachableError
	switch {
	case errors.As(err, &he):
		writeError(w, he.code, err)
	case errors.Is(err, consensus.ErrNoLeader), errors.As(err, &ue), errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err)
	case errors.Is(err, consensus.ErrTokenUnknown), errors.Is(err, consensus.ErrTokenExpired), errors.Is(err, consensus.ErrTokenUsedUp),
		errors.Is(err, consensus.ErrTokenRevoked), errors.Is(err, consensus.ErrTokenRole), errors.Is(err, consensus.ErrEvicted):
		writeError(w, http.StatusForbidden, err)
	case errors.Is(err, consensus.ErrNameTaken), errors.Is(err, consensus.ErrInitialized), errors.Is(err, consensus.ErrAppVersion), errors.Is(err, consensus.ErrLastAdmin),
		errors.Is(err, consensus.ErrAlreadyRevoked):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, consensus.ErrDeviceUnknown), errors.Is(err, consensus.ErrOperatorGone), errors.Is(err, consensus.ErrAppUnknown):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, consensus.ErrBadCommand):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// decodeBody reads a JSON body strictly: unknown fields and trailing data
// are errors, and so is a body over maxBody.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %s", describeJSONError(err)))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, errors.New("request body: trailing data after the JSON object"))
		return false
	}
	return true
}

func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return "empty; a JSON object is required"
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: expected %s, got %s", te.Field, te.Type, te.Value)
	case errors.As(err, &mbe):
		return fmt.Sprintf("larger than %d bytes", mbe.Limit)
	}
	return err.Error()
}

// withSpec runs fn with this node's spec (the store on gateways, the local
// copy elsewhere).
func (n *Node) withSpec(fn func(*consensus.Spec)) {
	if n.store != nil {
		n.store.View(fn)
		return
	}
	n.specMu.RLock()
	defer n.specMu.RUnlock()
	sp := n.spec
	if sp == nil {
		sp = emptySpec
	}
	fn(sp)
}

var emptySpec, _ = consensus.DecodeSpec([]byte(`{}`))

func (n *Node) specVersion() uint64 {
	if n.store != nil {
		return n.store.Version()
	}
	n.specMu.RLock()
	defer n.specMu.RUnlock()
	if n.spec == nil {
		return 0
	}
	return n.spec.Version
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func (n *Node) authorize(r *http.Request, needAdmin bool) (int, error) {
	_, code, err := n.authenticate(r, needAdmin)
	return code, err
}

func (n *Node) viewer(h http.HandlerFunc) http.HandlerFunc { return n.auth(h, false) }
func (n *Node) admin(h http.HandlerFunc) http.HandlerFunc  { return n.auth(h, true) }

func (n *Node) auth(h http.HandlerFunc, needAdmin bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		op, code, err := n.authenticate(r, needAdmin)
		if err != nil {
			writeError(w, code, err)
			return
		}
		r = withCaller(r, op)
		if _, ok := r.URL.Query()["consistent"]; ok && r.Method == http.MethodGet {
			if !n.consistentRead(w, r) {
				return
			}
		}
		n.setReadHeaders(w)
		h(w, r)
	}
}

// member admits only peers presenting a certificate of this fleet.
func (n *Node) member(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		peer := peerCert(r)
		if peer == nil {
			writeError(w, http.StatusUnauthorized, errors.New("node-to-node endpoint: a certificate of this fleet is required"))
			return
		}
		if n.peerRevoked(peer) {
			writeError(w, http.StatusForbidden, ErrCertRevoked)
			return
		}
		h(w, r)
	}
}

// consistentRead makes a ?consistent read linearizable: on the leader, a
// Raft barrier; elsewhere the read is answered by the leader. It returns
// false when it has already answered.
func (n *Node) consistentRead(w http.ResponseWriter, r *http.Request) bool {
	if n.IsLeader() {
		if err := n.store.Barrier(5 * time.Second); err != nil {
			writeErr(w, fmt.Errorf("%w (%v)", consensus.ErrNoLeader, err))
			return false
		}
		return true
	}
	leader, err := n.leaderAPI()
	if err != nil {
		writeErr(w, err)
		return false
	}
	ctx, release := untilGone(r.Context(), func() bool { return n.leaderMoved(leader) }, errLeaderMoved)
	defer release()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+leader+r.URL.RequestURI(), nil)
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	res, err := n.peerClient().Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errLeaderMoved) {
			err = errLeaderMoved
		}
		writeErr(w, fmt.Errorf("%w: the leader at %s did not answer: %v", consensus.ErrNoLeader, leader, err))
		return false
	}
	defer res.Body.Close()
	for _, h := range []string{"Content-Type", api.HeaderIndex, api.HeaderKnownLeader, api.HeaderLastContact} {
		if v := res.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(res.StatusCode)
	io.Copy(w, res.Body)
	return false
}

func (n *Node) setReadHeaders(w http.ResponseWriter) {
	leader, lastContact := n.leaderView()
	w.Header().Set(api.HeaderIndex, strconv.FormatUint(n.specVersion(), 10))
	w.Header().Set(api.HeaderKnownLeader, strconv.FormatBool(leader != ""))
	w.Header().Set(api.HeaderLastContact, strconv.FormatInt(lastContact.Milliseconds(), 10))
}

// leaderView says which leader this node knows of and how long ago it last
// heard from it (for edges: how old the freshest gateway report is).
func (n *Node) leaderView() (string, time.Duration) {
	if n.store != nil {
		id, _ := n.store.Leader()
		lc := n.store.LastContact()
		if lc.IsZero() {
			return id, time.Since(n.started)
		}
		return id, time.Since(lc)
	}
	name, at := n.gossipLeader()
	if at.IsZero() {
		return name, time.Since(n.started)
	}
	return name, time.Since(at)
}

// gossipLeader is the leader named by the most live gateways, and when the
// freshest of those reports was sent.
func (n *Node) gossipLeader() (string, time.Time) {
	votes := map[string]int{}
	var fresh time.Time
	for _, m := range n.mesh.Members() {
		if !m.Alive || m.Role != "gateway" || m.Health.Leader == "" {
			continue
		}
		votes[m.Health.Leader]++
		if m.Sent.After(fresh) {
			fresh = m.Sent
		}
	}
	best, bestN := "", 0
	for name, c := range votes {
		if c > bestN || (c == bestN && name < best) {
			best, bestN = name, c
		}
	}
	return best, fresh
}

// handleHealth answers GET /v1/health. Without a credential it says only
// whether the node is up (state and uptime): the API listens on the
// network, and what the fleet is (names, cluster, leader, versions) is for
// operators and members. A credential of any role, or a fleet certificate,
// gets the whole answer; a wrong credential is refused.
func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := api.Health{State: n.selfState(), UptimeSec: time.Since(n.started).Seconds()}
	full := false
	switch peer := peerCert(r); {
	case peer != nil && !n.peerRevoked(peer):
		full = true
	case bearer(r) != "":
		if _, code, err := n.authenticate(r, false); err != nil {
			writeError(w, code, err)
			return
		}
		full = true
	}
	if full {
		leader, _ := n.leaderView()
		h.Name, h.Role, h.Site, h.Version, h.ClusterID = n.state.Name, n.state.Role, n.state.Site, Version, n.state.ClusterID
		h.SpecVersion, h.Leader, h.Members = n.specVersion(), leader, len(n.mesh.Members())
		if n.store != nil {
			h.RaftState = n.store.State()
		}
	}
	writeJSON(w, http.StatusOK, h)
}

// nodeViews merges the gossip view with the devices the spec knows, so a
// device that never came up (or is long gone) still shows.
func (n *Node) nodeViews() []api.Node {
	members := n.mesh.Members()
	seen := map[string]bool{}
	var voters map[string]bool
	if n.store != nil {
		if servers, err := n.store.Servers(); err == nil {
			voters = map[string]bool{}
			for _, s := range servers {
				voters[s.ID] = s.Voter
			}
		}
	}
	out := make([]api.Node, 0, len(members))
	var evicted map[string]bool
	n.withSpec(func(s *consensus.Spec) {
		evicted = map[string]bool{}
		for name, d := range s.Devices {
			if d.State == consensus.DeviceEvicted {
				evicted[name] = true
			}
		}
	})
	for _, m := range members {
		if evicted[m.Name] {
			continue
		}
		seen[m.Name] = true
		v := api.Node{
			Name: m.Name, Role: m.Role, Site: m.Site, Labels: m.Labels, State: m.State(), OfflineReason: m.OfflineReason,
			API: m.API, Gossip: m.Gossip, LastSeen: m.LastSeen.UTC(), SpecVersion: m.Health.SpecVersion, Version: m.Version,
			Health: api.NodeHealth{CPUPercent: m.Health.CPUPercent, MemPercent: m.Health.MemPercent, DiskPercent: m.Health.DiskPercent,
				TempC: m.Health.TempC, Load1: m.Health.Load1, UptimeSec: m.Health.UptimeSec},
			Message: m.Health.Message,
		}
		if c := m.Health.Compliance; c != nil {
			v.Compliance = &api.NodeCompliance{Policy: c.Policy, Score: c.Score, Failing: c.Failing, Checked: c.Checked}
		}
		for _, a := range m.Health.Apps {
			v.Apps = append(v.Apps, api.AppStatus{Name: a.Name, Version: a.Version, Status: a.Status, Message: a.Message, Since: a.Since})
		}
		if voters != nil && m.Role == "gateway" {
			if vt, ok := voters[m.Name]; ok {
				v.Voter = &vt
			}
		}
		out = append(out, v)
	}
	n.withSpec(func(s *consensus.Spec) {
		for name, d := range s.Devices {
			if seen[name] || d.State == consensus.DeviceEvicted {
				continue
			}
			st := mesh.StateOffline
			reason := "never seen on the mesh by this node"
			if d.State == consensus.DeviceProvisioning {
				st, reason = mesh.StateProvisioning, ""
			}
			out = append(out, api.Node{Name: name, Role: d.Role, Site: d.Site, Labels: d.Labels, State: st, OfflineReason: reason})
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (n *Node) fleetSummary() api.Fleet {
	nodes := n.nodeViews()
	leader, lc := n.leaderView()
	f := api.Fleet{ClusterID: n.state.ClusterID, Leader: leader, SpecVersion: n.specVersion(),
		ByState: map[string]int{}, ByRole: map[string]int{}, BySite: map[string]int{}, Alerts: []string{},
		AnsweredBy: n.state.Name, LastContactMS: lc.Milliseconds()}
	for _, s := range mesh.States {
		f.ByState[s] = 0
	}
	for _, v := range nodes {
		f.Total++
		if v.State == mesh.StateOffline || v.State == mesh.StateProvisioning || v.State == mesh.StateUnprovisioned {
			f.Offline++
		} else {
			f.Online++
		}
		f.ByState[v.State]++
		f.ByRole[v.Role]++
		site := v.Site
		if site == "" {
			site = "(none)"
		}
		f.BySite[site]++
		if v.State == mesh.StateOffline {
			f.Alerts = append(f.Alerts, fmt.Sprintf("%s is offline (%s)", v.Name, v.OfflineReason))
		}
		if v.State == mesh.StateProvisioning {
			f.Alerts = append(f.Alerts, fmt.Sprintf("%s was provisioned but has not joined yet", v.Name))
		}
		if v.State == mesh.StateError {
			f.Alerts = append(f.Alerts, fmt.Sprintf("%s is in error: %s", v.Name, v.Message))
		}
		if c := v.Compliance; c != nil && len(c.Failing) > 0 {
			f.NonCompliant = append(f.NonCompliant, v.Name)
			f.Alerts = append(f.Alerts, fmt.Sprintf("%s does not comply with policy %s (score %.0f%%; failing: %s)", v.Name, c.Policy, c.Score, strings.Join(c.Failing, ", ")))
		}
	}
	n.withSpec(func(s *consensus.Spec) { f.Applications = len(s.Apps) })
	if leader == "" {
		f.Alerts = append(f.Alerts, "no Raft leader known: the fleet cannot accept writes")
	}
	return f
}

func (n *Node) handleFleet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.fleetSummary())
}

func (n *Node) handleNodes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.nodeViews())
}

func (n *Node) handleNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for _, v := range n.nodeViews() {
		if v.Name == name {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("no node named %q in this fleet", name))
}

// DefaultTokenTTL is a join token's lifetime when none is given.
const DefaultTokenTTL = 24 * time.Hour

// MaxTokenTTL bounds join token lifetimes.
const MaxTokenTTL = 365 * 24 * time.Hour

func (n *Node) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if !consensus.ValidRole(req.Role) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("role: %q is not one of %v", req.Role, consensus.Roles))
		return
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > MaxTokenTTL {
			writeError(w, http.StatusBadRequest, fmt.Errorf("ttl: %q must be a positive duration up to %v, like 24h", req.TTL, MaxTokenTTL))
			return
		}
		ttl = d
	}
	if req.Uses < 0 {
		writeError(w, http.StatusBadRequest, errors.New("uses: must be 0 (unlimited) or more"))
		return
	}
	tok, err := jointoken.New(n.caPin(), n.joinAddrs())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	now := time.Now().UTC()
	noteAudit(r, "created join token %s for role %s, ttl %v, uses %d", tok.ID, req.Role, ttl, req.Uses)
	rec := &consensus.JoinToken{ID: tok.ID, Hash: jointoken.HashSecret(tok.ID, tok.Secret), Role: req.Role,
		Created: now, Expires: now.Add(ttl), MaxUses: req.Uses}
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpCreateToken, Time: now, Token: rec})
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("join token created", "token_id", tok.ID, "role", req.Role, "expires", rec.Expires)
	writeJSON(w, http.StatusCreated, api.TokenCreateResponse{Token: tok.String(), ID: tok.ID, Role: req.Role, Expires: rec.Expires, Uses: req.Uses, Index: idx})
}

func (n *Node) handleTokenList(w http.ResponseWriter, r *http.Request) {
	var out []api.TokenInfo
	now := time.Now()
	n.withSpec(func(s *consensus.Spec) {
		for _, t := range s.Tokens {
			out = append(out, api.TokenInfo{ID: t.ID, Role: t.Role, Created: t.Created, Expires: t.Expires, MaxUses: t.MaxUses,
				Used: t.Uses, UsesLeft: t.UsesLeft(), Revoked: t.Revoked, Expired: !t.Expires.IsZero() && now.After(t.Expires)})
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	if out == nil {
		out = []api.TokenInfo{}
	}
	writeJSON(w, http.StatusOK, out)
}

// caPin is the pin of the fleet CA.
func (n *Node) caPin() string { return jointokenPin(n.id.CA) }

// joinAddrs are the API addresses a token points at: the gateways this node
// knows to be alive (this node first if it is one), at most 5.
func (n *Node) joinAddrs() []string {
	var addrs []string
	if n.IsGateway() {
		addrs = append(addrs, n.apiAddr)
	}
	for _, m := range n.mesh.Members() {
		if m.Alive && m.Role == "gateway" && m.Name != n.state.Name && m.API != "" {
			addrs = append(addrs, m.API)
		}
		if len(addrs) >= 5 {
			break
		}
	}
	if len(addrs) == 0 {
		addrs = append(addrs, n.apiAddr)
	}
	return addrs
}

func (n *Node) handleSpec(w http.ResponseWriter, r *http.Request) {
	if n.store != nil {
		b, v, err := n.store.SpecJSON()
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set(api.HeaderIndex, strconv.FormatUint(v, 10))
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	n.specMu.RLock()
	sp := n.spec
	n.specMu.RUnlock()
	if sp == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("this node has no spec yet"))
		return
	}
	writeJSON(w, http.StatusOK, sp)
}

// handleSpecDelta answers GET /internal/v1/spec/delta?since=V on gateways:
// the consensus.SpecDelta from version V to this gateway's spec, or 410 when
// it has no record reaching back to V (the caller then fetches the whole
// spec).
func (n *Node) handleSpecDelta(w http.ResponseWriter, r *http.Request) {
	if n.store == nil {
		writeError(w, http.StatusNotFound, errors.New("only gateways serve spec deltas"))
		return
	}
	since, err := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, errors.New("since: must be a spec version (a non-negative integer)"))
		return
	}
	b, to, ok, err := n.store.DeltaJSON(since)
	if err != nil {
		writeErr(w, err)
		return
	}
	if !ok {
		writeError(w, http.StatusGone, fmt.Errorf("no delta from spec version %d here; fetch the whole spec", since))
		return
	}
	w.Header().Set(api.HeaderIndex, strconv.FormatUint(to, 10))
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// handleApply commits a command forwarded by another node.
func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	var c consensus.Command
	if !decodeBody(w, r, &c) {
		return
	}
	if c.Op == consensus.OpInit || c.Op == consensus.OpPruneTokens {
		// Leader-made only: init once, pruning by the leader's own clock.
		writeError(w, http.StatusForbidden, fmt.Errorf("%s cannot be forwarded", c.Op))
		return
	}
	if !n.IsLeader() {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%w: %s is not the leader", consensus.ErrNotLeader, n.state.Name))
		return
	}
	if op, ok := r.Context().Value(verifiedOperatorKey{}).(*consensus.Operator); ok {
		// The audit entry names the operator the leader verified, whatever
		// the forwarding node said; a forwarded operator write without one
		// gets one here.
		if c.Audit == nil {
			c.Audit = &consensus.AuditEntry{Method: r.Method, Path: r.URL.Path, Summary: c.Op, Remote: r.RemoteAddr}
			if peer := peerCert(r); peer != nil {
				c.Audit.Via = peer.Subject.CommonName
			}
		}
		c.Audit.OperatorID, c.Audit.OperatorName, c.Audit.Role = op.ID, op.Name, op.Role
	}
	idx, err := n.store.Apply(r.Context(), &c)
	if err != nil {
		writeErr(w, err)
		return
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && pki.RoleOf(r.TLS.PeerCertificates[0]) == "gateway" {
		// The forwarding gateway waits to apply idx itself.
		n.store.PushCommit()
	}
	writeJSON(w, http.StatusOK, api.WriteResult{Index: idx})
}

// handleDeviceRegister pre-registers a device that provisioning prepared:
// it shows as provisioning until it joins.
func (n *Node) handleDeviceRegister(w http.ResponseWriter, r *http.Request) {
	var req api.DeviceRegisterRequest
	if !decodeBody(w, r, &req) {
		return
	}
	switch {
	case !ValidName(req.Name):
		writeError(w, http.StatusBadRequest, fmt.Errorf("name: %q must be lower-case letters, digits and '-'", req.Name))
		return
	case !consensus.ValidRole(req.Role):
		writeError(w, http.StatusBadRequest, fmt.Errorf("role: %q is not one of %v", req.Role, consensus.Roles))
		return
	case len(req.Model) > 32 || len(req.Serial) > 64:
		writeError(w, http.StatusBadRequest, errors.New("model and serial: at most 32 and 64 characters"))
		return
	}
	if err := validSiteLabels("", req.Site, req.Labels); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	noteAudit(r, "pre-registered %s %s at site %q", req.Role, req.Name, req.Site)
	now := time.Now().UTC()
	idx, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRegisterDevice, Time: now, Device: &consensus.Device{
		Name: req.Name, Role: req.Role, Site: req.Site, Labels: req.Labels, Model: req.Model, Serial: req.Serial, Registered: now}})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.WriteResult{Index: idx})
}
