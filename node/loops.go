package node

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

func jointokenPin(ca *x509.Certificate) string { return jointoken.PinOf(ca) }

// selfState is the state this node reports about itself.
func (n *Node) selfState() string {
	_, appMsg := n.appHealth()
	return n.stateFor(n.problem(sharedSampler.sample(n.cfg.DataDir), appMsg))
}

func (n *Node) stateFor(problem string) string {
	switch {
	case problem != "": // (first: a new node on a full disk never gets further)
		return mesh.StateError
	case n.specVersion() == 0:
		return mesh.StateInitializing
	}
	return mesh.StateReady
}

// problem is what puts this node in error, the gravest first: a binary
// too old for the fleet's Raft log, a full disk under the data dir, then
// an application's failure (appMsg); "" when nothing does.
func (n *Node) problem(s hostSample, appMsg string) string {
	if n.store != nil {
		if err := n.store.Halted(); err != nil {
			return err.Error()
		}
	}
	if s.diskFull() {
		what := "its copy of the spec"
		if n.store != nil {
			what = "the fleet's Raft log"
		}
		return fmt.Sprintf("the disk of the data dir %s is full (%s free of %s, %d inodes free): this node cannot store %s; free space there",
			n.cfg.DataDir, bytesIEC(s.DiskFree), bytesIEC(s.DiskTotal), s.InodesFree, what)
	}
	return appMsg
}

// health is this node's current health summary.
func (n *Node) health() mesh.Health {
	s := sharedSampler.sample(n.cfg.DataDir)
	apps, appMsg := n.appHealth()
	msg := n.problem(s, appMsg)
	h := mesh.Health{
		State: n.stateFor(msg), CPUPercent: s.CPU, MemPercent: s.Mem, DiskPercent: s.Disk, TempC: s.TempC,
		Load1: s.Load1, UptimeSec: s.Uptime, SpecVersion: n.specVersion(), Apps: apps, Message: msg,
	}
	if n.store != nil {
		h.Leader, _ = n.store.Leader()
	}
	h.Compliance = n.currentCompliance()
	h.Keys = n.keyFingerprints()
	return h
}

// healthLoop gossips health every HealthInterval, and at once when the spec
// or the leader changes.
func (n *Node) healthLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.HealthInterval)
	defer t.Stop()
	var specCh <-chan struct{}
	var leaderCh <-chan bool
	if n.store != nil {
		specCh = n.store.Watch()
		leaderCh = n.store.LeaderCh()
	}
	fast := time.NewTicker(200 * time.Millisecond)
	defer fast.Stop()
	lastLeader := ""
	for {
		coalesce := false
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-specCh:
			coalesce = true
		case <-leaderCh:
		case <-n.healthKick:
		case <-fast.C:
			// Leader changes are not always signalled on LeaderCh (followers
			// learn of a new leader silently): check cheaply.
			if n.store == nil {
				continue
			}
			if id, _ := n.store.Leader(); id == lastLeader {
				continue
			}
		}
		h := n.health()
		lastLeader = h.Leader
		n.mesh.Update(h)
		n.checkHalted()
		if coalesce {
			// During a burst of writes, gossip the spec version every
			// specGossipGap rather than once per write: the signals that
			// arrive meanwhile fold into one.
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(specGossipGap):
			}
		}
	}
}

// checkHalted logs, once, that this gateway's FSM stopped
// (consensus.ErrFSMTooOld; its health says so too), and hands leadership on
// while it leads: its spec is stale, so writes through it would fail and
// reads lag. Its log is whole, so Raft may elect it again; it hands on
// again then.
func (n *Node) checkHalted() {
	if n.store == nil {
		return
	}
	halted := n.store.Halted()
	if halted == nil {
		return
	}
	if !n.haltLogged {
		n.haltLogged = true
		n.log.Error("this gateway cannot apply the fleet's Raft log; upgrade its fleetmesh binary", "err", halted)
	}
	if !n.store.IsLeader() {
		return
	}
	if sv, err := n.store.Servers(); err == nil && consensus.Voters(sv) < 2 {
		return // no one to hand on to: writes wait for the upgrade
	}
	err := n.store.TransferLeadership()
	if time.Since(n.haltWarned) > time.Minute {
		n.haltWarned = time.Now()
		n.log.Warn("handed Raft leadership on: this gateway's spec is stale", "err", err)
	}
}

// specGossipGap is the least time between two spec-version gossips of a
// gateway.
const specGossipGap = 20 * time.Millisecond

// peersLoop remembers live peers' gossip addresses so a restart rejoins
// without a token. It saves them as soon as they change (at most once a
// second, and only when the set differs from the last saved), so that a node
// restarted soon after joining finds its peers: one restarted with none
// stays cut off until some peer happens to push/pull with it.
func (n *Node) peersLoop() {
	defer n.wg.Done()
	sub := n.mesh.Subscribe()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var last []string
	var saved time.Time
	for first := true; ; first = false {
		if !first {
			select {
			case <-n.ctx.Done():
				return
			case <-t.C:
			case <-sub:
				if wait := time.Second - time.Since(saved); wait > 0 {
					select {
					case <-n.ctx.Done():
						return
					case <-time.After(wait):
					}
				}
			}
		}
		p := n.mesh.AliveGossipAddrs()
		if len(p) == 0 || slices.Equal(p, last) {
			continue
		}
		if err := n.dir.writeJSON(filePeers, p); err != nil {
			n.log.Warn("cannot save peers", "err", err)
			continue
		}
		last, saved = p, time.Now()
	}
}

// reconnectLoop knocks on failed members and remembered peers, so a healed
// partition or a fleet that comes back after an outage merges again.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	interval := n.cfg.Mesh.ProbeInterval * 5
	if interval == 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		var addrs []string
		if a := n.mesh.ReconnectTarget(); a != "" {
			addrs = append(addrs, a)
		}
		if n.mesh.NumAlive() <= 1 {
			var peers []string
			if b, err := n.dir.read(filePeers); err == nil {
				json.Unmarshal(b, &peers)
			}
			rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
			addrs = append(addrs, peers[:min(3, len(peers))]...)
		}
		if len(addrs) == 0 {
			continue
		}
		n.mesh.Join(addrs)
	}
}

// specSyncLoop keeps an edge node's spec copy current: when gossip shows a
// newer spec version on a peer, it fetches the spec from a gateway that has
// it (or any peer that does).
func (n *Node) specSyncLoop() {
	defer n.wg.Done()
	defer n.saveSpec()
	sub := n.mesh.Subscribe()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	saved, every := time.Now(), specSaveInterval
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-sub:
		case <-t.C:
		}
		n.syncSpec(0)
		if time.Since(saved) >= every {
			// A save costs in proportion to the spec: keep it to a tenth
			// of a core (with 30,000 tokens in the spec and writes
			// arriving all the time, saving each second took 7.5% of the
			// CPU of a 5-node fleet on 2 cores; a Pi is slower).
			every = max(specSaveInterval, 10*n.saveSpec())
			saved = time.Now()
		}
		// During a burst of writes take one delta every 50 ms at most
		// rather than one per version.
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// specSaveInterval is how often an edge writes its changed spec copy.
const specSaveInterval = time.Second

// syncSpec fetches the spec if a gateway has a newer one than ours (or at
// least version want). Only gateways are asked, and the answer counts only
// if the peer's certificate says gateway: an edge device (one that was
// stolen, say) cannot feed others a spec of its making.
func (n *Node) syncSpec(want uint64) {
	have := n.specVersion()
	type cand struct {
		api     string
		version uint64
		gateway bool
	}
	var cands []cand
	for _, m := range n.mesh.Members() {
		if m.Alive && m.Name != n.state.Name && m.API != "" && m.Role == "gateway" && m.Health.SpecVersion > have {
			cands = append(cands, cand{m.API, m.Health.SpecVersion, true})
		}
	}
	if len(cands) == 0 && want > have {
		for _, a := range n.state.Addrs {
			cands = append(cands, cand{a, want, true})
		}
	}
	// Gateways first (they are the source), newest first.
	slices.SortFunc(cands, func(a, b cand) int {
		if a.gateway != b.gateway {
			if a.gateway {
				return -1
			}
			return 1
		}
		return int(b.version) - int(a.version)
	})
	for _, c := range cands {
		sp, raw, err := n.fetchSpec(c.api)
		if err != nil {
			if errors.Is(err, ErrNotGateway) {
				n.log.Warn("a peer that claims to be a gateway has no gateway certificate; its spec is ignored", "peer", c.api)
			}
			continue
		}
		if sp.Version <= have {
			continue
		}
		if sp.ClusterID != n.state.ClusterID {
			n.log.Warn("peer served a spec of another fleet; ignored", "peer", c.api)
			continue
		}
		n.specMu.Lock()
		if n.spec == nil || sp.Version > n.spec.Version {
			n.spec = sp
			n.specDirty = raw == nil
		}
		n.specMu.Unlock()
		if raw != nil {
			if err := n.dir.write(fileSpec, raw, 0o600); err != nil {
				n.log.Warn("cannot save spec copy", "err", err)
			}
		}
		select {
		case n.specCh <- struct{}{}:
		default:
		}
		n.mesh.Update(n.health())
		return
	}
}

// fetchSpec gets the newest spec a gateway has: as a delta from this node's
// copy when the gateway can give one (raw is then nil: the copy on disk is
// saved later, by saveSpec), else whole (raw is its JSON).
func (n *Node) fetchSpec(gw string) (sp *consensus.Spec, raw []byte, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	ctx, release := untilGone(ctx, func() bool { return n.peerDown(gw) }, errPeerDown)
	defer release()
	n.specMu.RLock()
	base := n.spec
	n.specMu.RUnlock()
	if base != nil && base.ClusterID == n.state.ClusterID {
		var d json.RawMessage
		err := n.gatewayCall(ctx, http.MethodGet, gw, "/internal/v1/spec/delta?since="+strconv.FormatUint(base.Version, 10), &d)
		if err == nil {
			var delta *consensus.SpecDelta
			if delta, err = consensus.DecodeDelta(d); err == nil {
				if sp, err = base.ApplyDelta(delta); err == nil {
					n.specFetched("delta")
					return sp, nil, nil
				}
			}
			n.log.Warn("gateway served a spec delta that does not apply; fetching the whole spec", "peer", gw, "err", err)
		} else if he := (*httpError)(nil); !errors.As(err, &he) || (he.code != http.StatusGone && he.code != http.StatusNotFound) {
			return nil, nil, err
		}
	}
	var full json.RawMessage
	if err := n.gatewayCall(ctx, http.MethodGet, gw, "/internal/v1/spec", &full); err != nil {
		return nil, nil, err
	}
	if sp, err = consensus.DecodeSpec(full); err != nil {
		return nil, nil, err
	}
	n.specFetched("full")
	return sp, full, nil
}

// saveSpec writes this edge's spec copy to the data dir if it changed since
// the last save, and says how long that took. Deltas arrive many a second
// during a burst of writes; the copy on disk lags by specSaveInterval, or
// ten times the last save if that is longer (a node restarted from it
// catches up by a delta).
func (n *Node) saveSpec() time.Duration {
	n.specMu.Lock()
	sp, dirty := n.spec, n.specDirty
	n.specDirty = false
	n.specMu.Unlock()
	if !dirty || sp == nil {
		return 0
	}
	start := time.Now()
	b, err := json.Marshal(sp)
	if err == nil {
		err = n.dir.write(fileSpec, b, 0o600)
	}
	if err != nil {
		n.log.Warn("cannot save spec copy", "err", err)
		n.specMu.Lock()
		n.specDirty = true
		n.specMu.Unlock()
	}
	return time.Since(start)
}

// apply commits a command through the leader: locally when this node leads,
// otherwise forwarded over mutual TLS. While an election is under way it
// waits up to WriteHoldTimeout for a leader; then it fails with "no quorum".
func (n *Node) apply(ctx context.Context, c *consensus.Command) (uint64, error) {
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	if c.Audit == nil {
		c.Audit = n.auditEntry(ctx, c)
	}
	var body []byte // the command as forwarded, made once if needed
	deadline := time.Now().Add(writeHold)
	for {
		var idx uint64
		var err error
		if n.IsLeader() {
			idx, err = n.store.Apply(ctx, c)
		} else {
			var leader string
			leader, err = n.leaderAPI()
			if err == nil && body == nil {
				c.Key = nil // the leader makes it; none travels from here
				body, err = json.Marshal(c)
				if err != nil {
					return 0, err
				}
			}
			if err == nil {
				var out struct{ Index uint64 }
				fctx, release := untilGone(ctx, func() bool { return n.leaderMoved(leader) }, errLeaderMoved)
				err = n.peerCallAs(fctx, http.MethodPost, leader, "/internal/v1/apply", body, &out, callerFrom(ctx))
				if err != nil && errors.Is(context.Cause(fctx), errLeaderMoved) {
					err = &unreachableError{addr: leader, err: errLeaderMoved} // retryable: to the new leader
				}
				release()
				idx = out.Index
			}
		}
		if err == nil {
			n.catchUp(ctx, idx)
			return idx, nil
		}
		if errors.Is(err, consensus.ErrFSMTooOld) {
			n.kickHealth() // hand leadership on now, not at the next tick
		}
		if !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil && retryable(err) {
				return 0, n.noQuorum(err)
			}
			return idx, err
		}
		select {
		case <-ctx.Done():
			return 0, n.noQuorum(ctx.Err())
		case <-time.After(writeRetry):
		}
	}
}

// errLeaderMoved ends a request forwarded to a leader that is no longer
// the leader this node knows; errPeerDown one to a peer the mesh says is
// gone.
var (
	errLeaderMoved = errors.New("the leader changed while the request was with the old one")
	errPeerDown    = errors.New("the peer went offline during the request")
)

// untilGone returns a context that ends when ctx does, or, with cause,
// once gone says the peer a request went to will not answer it (a leader
// no longer leading, a gateway offline). A host that loses power
// mid-request never answers (it sends no reset), and without this the
// request would wait for its timeout, seconds after the fleet moved on.
// release must be called when the request is done.
func untilGone(ctx context.Context, gone func() bool, cause error) (context.Context, func()) {
	c, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(leaderCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-c.Done():
				return
			case <-t.C:
				if gone() {
					cancel(cause)
					return
				}
			}
		}
	}()
	return c, func() { close(done); cancel(nil) }
}

// leaderCheckEvery is how often a request in flight checks that its peer
// can still answer it.
const leaderCheckEvery = 25 * time.Millisecond

// leaderMoved says whether target (a leader's API address) is no longer
// the leader: this node knows another, or knows none and the mesh says
// target is gone.
func (n *Node) leaderMoved(target string) bool {
	if l, err := n.leaderAPI(); err == nil {
		return l != target
	}
	return n.peerDown(target)
}

// peerDown says whether the mesh holds the member whose API is at addr as
// gone.
func (n *Node) peerDown(addr string) bool {
	for _, m := range n.mesh.Members() {
		if m.API == addr {
			return !m.Alive
		}
	}
	return false
}

// writeRetry is the pause between tries of a write while there is no
// leader: short, so that a write lands soon after an election (each try is
// a local check or one request to the new leader).
const writeRetry = 10 * time.Millisecond

// catchUp waits briefly until this node's spec includes index idx, so a
// client that writes through a node and then reads from it sees its write:
// a gateway until its FSM applied idx, an edge until it fetched it.
func (n *Node) catchUp(ctx context.Context, idx uint64) {
	if n.store != nil {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n.store.WaitVersion(wctx, idx)
		return
	}
	deadline := time.Now().Add(time.Second)
	for n.specVersion() < idx && time.Now().Before(deadline) && ctx.Err() == nil {
		// One fetch at a time: writers that wait together share it (the
		// delta fetched covers all their indexes).
		n.catchUpMu.Lock()
		if n.specVersion() < idx {
			n.syncSpec(idx)
		}
		n.catchUpMu.Unlock()
		if n.specVersion() >= idx {
			return
		}
		select { // a fetch per try: don't hammer the gateway
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// writeHold is how long a write waits for a leader before failing.
var writeHold = 2 * time.Second

func retryable(err error) bool {
	var ue *unreachableError
	var he *httpError
	switch {
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrNotLeader), errors.As(err, &ue):
		return true
	case errors.As(err, &he):
		return he.code == http.StatusServiceUnavailable
	}
	return false
}

// noQuorum explains a failed write in terms an operator can act on.
func (n *Node) noQuorum(cause error) error {
	total, reach := 0, 0
	for _, m := range n.mesh.Members() {
		if m.Role == "gateway" {
			total++
			if m.Alive {
				reach++
			}
		}
	}
	return fmt.Errorf("%w (%d of %d gateways reachable from %s; last error: %v)", consensus.ErrNoLeader, reach, total, n.state.Name, cause)
}

// leaderAPI returns the API address of the leader, or ErrNoLeader.
func (n *Node) leaderAPI() (string, error) {
	var name string
	if n.store != nil {
		name, _ = n.store.Leader()
	} else {
		name, _ = n.gossipLeader()
	}
	if name == "" {
		return "", consensus.ErrNoLeader
	}
	m, ok := n.mesh.Member(name)
	if !ok || m.API == "" {
		return "", fmt.Errorf("%w: leader %s is not in this node's view", consensus.ErrNoLeader, name)
	}
	if !m.Alive {
		return "", fmt.Errorf("%w: leader %s is unreachable from here", consensus.ErrNoLeader, name)
	}
	return m.API, nil
}
