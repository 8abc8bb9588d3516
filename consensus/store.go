package consensus

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/node/logwriter"
	"github.com/fleetmesh/fleetmesh/node/netgate"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Errors of the store.
var (
	ErrNotLeader = errors.New("not the raft leader")
	ErrNoLeader  = errors.New("no quorum: no Raft leader is reachable; writes are refused until a majority of gateways is back")
	ErrClosed    = errors.New("store closed")
)

// MaxVoters is the most voting gateways; further gateways join as non-voters.
const MaxVoters = 5

// Config configures a Store.
type Config struct {
	// NodeID is this gateway's name; it is also its Raft server ID.
	NodeID string
	// Dir holds raft.db and snapshots.
	Dir string
	// Bind is the Raft transport listen address (host:port; port 0 picks one).
	Bind string
	// Advertise is the address peers dial; empty means the bound address,
	// with AdvertiseHost in place of an unspecified host (0.0.0.0, which
	// peers cannot dial).
	Advertise     string
	AdvertiseHost string
	// ServerTLS must require client certificates of the fleet; ClientTLS
	// presents this node's certificate.
	ServerTLS, ClientTLS *tls.Config
	// Dial, if set, is consulted before each outgoing connection (tests use
	// it to partition the network).
	Dial func(addr string) error
	// Bootstrap makes this node the first voter of a new cluster.
	Bootstrap bool

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration

	// OldFSM plays a binary one FSM level older than this one (FSMLevel-1).
	// Only tests set it, to roll a gateway back.
	OldFSM bool

	Logger *slog.Logger
}

// Defaults for the Raft timings. They are far tighter than raft's WAN-safe
// defaults (1 s): gateways of one fleet share a LAN or a WireGuard tunnel, and
// the failover goal is 400 ms. A follower notices a dead leader after one to
// two heartbeat timeouts, and the election needs the other survivor to have
// noticed too (raft's pre-vote: a node that still hears a leader votes for
// no one), so failover takes about two heartbeat timeouts: 150 ms gives
// p50 ~ 0.35 s (BENCHMARKS.md), 250 ms gave 0.55 s. Pre-vote is also what
// makes tight timings safe: a starved follower that times out cannot unseat
// a healthy leader. The lease equals the heartbeat timeout, so a leader
// steps down only after missing its followers that long. Sites linked by
// slow links should raise them (agent config).
const (
	DefaultHeartbeatTimeout   = 150 * time.Millisecond
	DefaultElectionTimeout    = 150 * time.Millisecond
	DefaultLeaderLeaseTimeout = 150 * time.Millisecond
	DefaultCommitTimeout      = 20 * time.Millisecond
)

func (c *Config) setDefaults() {
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = DefaultLeaderLeaseTimeout
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("consensus: NodeID is empty")
	case c.Dir == "":
		return errors.New("consensus: Dir is empty")
	case c.ServerTLS == nil || c.ClientTLS == nil:
		return errors.New("consensus: TLS configs are required")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("consensus: LeaderLeaseTimeout must not exceed HeartbeatTimeout")
	}
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		return fmt.Errorf("consensus: Bind %q: %w", c.Bind, err)
	}
	return nil
}

// Store is one gateway's member of the Raft group and its copy of the spec.
type Store struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
	bolt  *raftboltdb.BoltStore
	addr  string

	// candidacies and leaderChanges count raft's observations (Counters).
	candidacies, leaderChanges atomic.Int64
	observer                   *raft.Observer

	// memberMu serializes this leader's membership changes, so that two
	// (a join's seat and a promotion) cannot both take the last voter seat.
	memberMu sync.Mutex

	mu       sync.Mutex
	watchers []chan struct{}
	// applied is closed (and replaced) on every change of the spec:
	// WaitVersion waits on it.
	applied   chan struct{}
	closed    bool
	closeOnce sync.Once
	// applyQ feeds applyLoop (Apply).
	applyQ    chan *pendingApply
	applyOnce sync.Once
	slots     chan struct{} // entries in flight (maxApplyInflight)
	// push asks pushLoop for a barrier (PushCommit); done ends both loops.
	push     chan struct{}
	pushOnce sync.Once
	done     chan struct{}
}

// Open starts the Raft member. With Bootstrap and no existing state it
// creates a single-voter cluster; otherwise it resumes from disk or waits to
// be added by the leader.
func Open(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: data dir: %w", err)
	}
	s := &Store{cfg: cfg, fsm: newFSM(), push: make(chan struct{}, 1), done: make(chan struct{}),
		applyQ: make(chan *pendingApply, maxApplyBatch), slots: make(chan struct{}, maxApplyInflight)}
	s.fsm.onApply = func(uint64) { s.notify() }
	if cfg.OldFSM {
		s.fsm.level = FSMLevel - 1
	}

	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("consensus: listen %s: %w", cfg.Bind, err)
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = ln.Addr().String()
		if a := ln.Addr().(*net.TCPAddr); a.IP.IsUnspecified() && cfg.AdvertiseHost != "" {
			adv = net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(a.Port))
		}
	}
	advAddr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("consensus: advertise %q: %w", adv, err)
	}
	s.addr = advAddr.String()
	host, _, _ := net.SplitHostPort(cfg.Bind)
	stream := &tlsStream{ln: tls.NewListener(netgate.Listener(ln, cfg.Dial), cfg.ServerTLS), adv: advAddr, client: cfg.ClientTLS,
		dialer: &netgate.Dialer{LocalIP: host, Hook: cfg.Dial}}
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Output: logwriter.New(cfg.Logger), Level: hclog.Info, DisableTime: true})
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 5 * time.Second, Logger: hl})

	bolt, err := openLogStore(filepath.Join(cfg.Dir, "raft.db"))
	if err != nil {
		s.trans.Close()
		return nil, fmt.Errorf("consensus: open raft.db: %w", err)
	}
	s.bolt = bolt
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl)
	if err != nil {
		s.closeTransport()
		return nil, fmt.Errorf("consensus: snapshot store: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.Logger = hl
	rc.BatchApplyCh = true

	has, err := raft.HasExistingState(bolt, bolt, snaps)
	if err != nil {
		s.closeTransport()
		return nil, fmt.Errorf("consensus: read state: %w", err)
	}
	if err := checkSnapshotLevel(snaps, s.fsm.level); err != nil {
		s.closeTransport()
		return nil, fmt.Errorf("consensus: %w", err)
	}
	logs, _ := raft.NewLogCache(logCacheSize, bolt) // errors only for a size below 1
	r, err := raft.NewRaft(rc, s.fsm, logs, bolt, snaps, s.trans)
	if err != nil {
		s.closeTransport()
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	s.raft = r
	s.observe()
	if cfg.Bootstrap && !has {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(s.addr), Suffrage: raft.Voter}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.Close()
			return nil, fmt.Errorf("consensus: bootstrap: %w", err)
		}
	}
	return s, nil
}

// checkSnapshotLevel refuses to start on a newest snapshot that holds
// commands above level (invariant 13). Raft alone would fall back to an
// older snapshot and replay a log that may no longer reach back to it.
func checkSnapshotLevel(snaps raft.SnapshotStore, level int) error {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		return nil // raft reports an unreadable snapshot itself
	}
	defer rc.Close()
	var d struct {
		Spec struct {
			Version uint64 `json:"version"`
			Level   int    `json:"level"`
		} `json:"spec"`
	}
	if json.NewDecoder(rc).Decode(&d) != nil || d.Spec.Level <= level {
		return nil
	}
	return fmt.Errorf("%w: its snapshot at version %d holds commands of FSM level %d, and this binary applies up to level %d: run a newer fleetmesh",
		ErrFSMTooOld, d.Spec.Version, d.Spec.Level, level)
}

// Counters are what an operator alerts on when a site link is poor: how
// often this gateway stood as a candidate, and how often the leader it
// knows changed, since it started.
type Counters struct {
	// Candidacies counts entries into the candidate state, pre-vote
	// included: with pre-vote most end without a new term or leader, but a
	// gateway that keeps standing is missing its leader's heartbeats.
	Candidacies, LeaderChanges int64
}

// Counters returns this store's counters.
func (s *Store) Counters() Counters {
	return Counters{Candidacies: s.candidacies.Load(), LeaderChanges: s.leaderChanges.Load()}
}

// observe counts raft's state and leader observations until the store
// closes. The observer never blocks raft: an observation that finds the
// channel full is dropped (raft counts it), which undercounts only under a
// storm of candidacies that the count already shows.
func (s *Store) observe() {
	ch := make(chan raft.Observation, 64)
	s.observer = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.RaftState, raft.LeaderObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.observer)
	go func() {
		var leader raft.ServerID
		for {
			select {
			case <-s.done:
				return
			case o := <-ch:
				switch d := o.Data.(type) {
				case raft.RaftState:
					if d == raft.Candidate {
						s.candidacies.Add(1)
					}
				case raft.LeaderObservation:
					if d.LeaderID != "" && d.LeaderID != leader {
						if leader != "" {
							s.leaderChanges.Add(1)
						}
						leader = d.LeaderID
					}
				}
			}
		}
	}()
}

func (s *Store) closeTransport() {
	s.trans.Close()
	if s.bolt != nil {
		s.bolt.Close()
	}
}

// Addr is the advertised Raft address.
func (s *Store) Addr() string { return s.addr }

// HasState reports whether the store has joined or bootstrapped a cluster.
func (s *Store) HasState() bool {
	f := s.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Apply commits c through Raft. It must be called on the leader; elsewhere
// it returns ErrNotLeader. A command the FSM refuses returns its reason.
//
// Commands that arrive while earlier ones are still being committed are
// batched into one log entry (applyLoop): under load a Raft entry, its
// fsyncs and its replication carry many writes, not one; a lone write goes
// out at once, as before. ctx does not abandon a write once it is queued:
// its outcome would be unknown; Raft's own timeouts bound the wait.
func (s *Store) Apply(ctx context.Context, c *Command) (uint64, error) {
	if err := s.haltedLeader(); err != nil {
		return 0, err
	}
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	c.Level = OpLevel(c.Op)
	if err := fillKey(c); err != nil {
		return 0, err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	s.applyOnce.Do(func() { go s.applyLoop() })
	// Fast path: nothing in flight, nothing queued: this write goes out
	// alone, from here (no hand-offs between goroutines).
	select {
	case s.slots <- struct{}{}:
		if len(s.applyQ) == 0 {
			r := s.commit(b, 1)[0]
			<-s.slots
			return r.Index, r.Err
		}
		<-s.slots
	default:
	}
	p := &pendingApply{data: b, done: make(chan Result, 1)}
	select {
	case s.applyQ <- p:
	case <-s.done:
		return 0, ErrClosed
	}
	select {
	case r := <-p.done:
		return r.Index, r.Err
	case <-s.done:
		return 0, ErrClosed
	}
}

type pendingApply struct {
	data []byte
	done chan Result
}

// openLogStore opens the Raft log and stable store at path.
func openLogStore(path string) (*raftboltdb.BoltStore, error) {
	// No freelist on disk (bbolt rebuilds it on open, as etcd runs it): a
	// Raft log that snapshots truncate has many free pages, and writing
	// their list on every commit made each write ~10% slower.
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path,
		BoltOptions: &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, Timeout: boltLockTimeout}})
	if errors.Is(err, bbolt.ErrTimeout) {
		err = fmt.Errorf("another process has it open (waited %v for its lock)", boltLockTimeout)
	}
	return bolt, err
}

// boltLockTimeout bounds the wait for raft.db's file lock: a second process
// on the same data dir gets an error rather than hanging.
const boltLockTimeout = 2 * time.Second

// logCacheSize is how many recent log entries Raft keeps in memory (as
// Consul and Nomad do): the leader replicates each new entry from memory
// rather than reading it back from bbolt and decoding it per follower
// (GetLog was 9% of the CPU of a single writer's writes).
const logCacheSize = 512

// Batching limits: entries in flight at once, commands per entry. One entry
// in flight gave the most writes per second (64 writers: 5,500/s, against
// 4,700 with two and 4,600 with four): the others wait for it and then go
// out together.
const (
	maxApplyInflight = 1
	maxApplyBatch    = 256
)

// applyLoop hands queued commands to Raft: as soon as fewer than
// maxApplyInflight entries are in flight, everything queued goes out as one
// entry.
func (s *Store) applyLoop() {
	for {
		var first *pendingApply
		select {
		case <-s.done:
			return
		case first = <-s.applyQ:
		}
		select {
		case s.slots <- struct{}{}:
		case <-s.done:
			first.done <- Result{Err: ErrClosed}
			return
		}
		batch := []*pendingApply{first}
	drain:
		for len(batch) < maxApplyBatch {
			select {
			case p := <-s.applyQ:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		data := batch[0].data
		if len(batch) > 1 {
			cmds := make([][]byte, len(batch))
			for i, p := range batch {
				cmds[i] = p.data
			}
			data = slices.Concat([]byte{'['}, bytes.Join(cmds, []byte{','}), []byte{']'})
		}
		go func() {
			defer func() { <-s.slots }()
			for i, r := range s.commit(data, len(batch)) {
				batch[i].done <- r
			}
		}()
	}
}

// commit applies one entry of n commands and returns their results.
func (s *Store) commit(data []byte, n int) []Result {
	res := make([]Result, n)
	f := s.raft.Apply(data, 5*time.Second)
	// (A command raft took but never answers, as at shutdown, ends with the
	// store; commitWait only backs that up.)
	if err := s.await(f, commitWait); err != nil {
		err = s.wrapRaftErr(err)
		for i := range res {
			res[i] = Result{Err: err}
		}
		return res
	}
	if rs, ok := f.Response().([]Result); ok && len(rs) == n {
		return rs
	}
	// One command, or a batch refused whole (it did not decode).
	r, ok := f.Response().(Result)
	if !ok {
		r = Result{Err: fmt.Errorf("%w: no result from the state machine", ErrBadCommand)}
	}
	for i := range res {
		res[i] = r
	}
	return res
}

func (s *Store) wrapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w (%v)", ErrNoLeader, err)
	}
	return err
}

// Barrier waits until every committed entry is applied here and verifies
// that this node is still the leader: after it, reads of the spec are
// linearizable.
func (s *Store) Barrier(timeout time.Duration) error {
	if err := s.haltedLeader(); err != nil {
		return err
	}
	if err := s.await(s.raft.VerifyLeader(), timeout); err != nil {
		return s.wrapRaftErr(err)
	}
	if err := s.await(s.raft.Barrier(timeout), timeout); err != nil {
		return s.wrapRaftErr(err)
	}
	return nil
}

// commitWait bounds the wait for a command's commit. Raft answers long
// before it (it steps down after its lease without a quorum); it only
// keeps a request from waiting for good.
const commitWait = time.Minute

// await waits for a raft future, but no longer than timeout, nor past the
// store's Close: raft does not always answer a VerifyLeader that is in
// flight when it shuts down, and a request waiting on it would hold up the
// node's stop for good (the node waits for its requests to end).
func (s *Store) await(f raft.Future, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }() // ends when raft answers, if ever
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-s.done:
		return ErrClosed
	case <-t.C:
		return fmt.Errorf("%w: raft did not answer in %v", ErrNoLeader, timeout)
	}
}

// View calls fn with the spec under a read lock. fn must not keep or change
// the spec.
func (s *Store) View(fn func(*Spec)) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	fn(s.fsm.spec)
}

// Spec returns a deep copy of the spec.
func (s *Store) Spec() *Spec {
	var c *Spec
	s.View(func(sp *Spec) { c = sp.Clone() })
	return c
}

// SpecJSON returns the spec as JSON and its version.
func (s *Store) SpecJSON() ([]byte, uint64, error) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	b, err := json.Marshal(s.fsm.spec)
	return b, s.fsm.spec.Version, err
}

// DeltaJSON returns, as JSON, the SpecDelta from version since to the
// current spec and the version it reaches; ok is false when this gateway
// cannot tell (since is older than its record of changes, or newer than its
// spec): the caller then needs the whole spec.
func (s *Store) DeltaJSON(since uint64) (b []byte, to uint64, ok bool, err error) {
	return s.fsm.deltaJSON(since)
}

// Secrets returns the gateway secrets (CA key, gossip key).
func (s *Store) Secrets() Secrets {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.secrets
}

// Version is the applied spec version.
func (s *Store) Version() uint64 {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.spec.Version
}

// Watch returns a channel that is signalled (without blocking the FSM)
// whenever the spec changes.
func (s *Store) Watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.watchers = append(s.watchers, ch)
	return ch
}

// PushCommit makes the leader tell its followers the commit index now. Raft
// carries it on the next AppendEntries, which, when no other write follows,
// waits for the CommitTimeout tick (20-40 ms): a write forwarded by a
// follower gateway, which then waits to see it applied locally, would wait
// that long. A barrier is such an AppendEntries. Calls made while one is
// in flight fold into the next, so a burst of writes adds few entries.
func (s *Store) PushCommit() {
	s.pushOnce.Do(func() { go s.pushLoop() })
	select {
	case s.push <- struct{}{}:
	default:
	}
}

func (s *Store) pushLoop() {
	for {
		select {
		case <-s.done:
			return
		case <-s.push:
		}
		if s.raft.State() == raft.Leader {
			s.raft.Barrier(time.Second).Error()
		}
	}
}

// WaitVersion waits until the spec here includes index idx (a write
// committed through the leader), or ctx ends.
func (s *Store) WaitVersion(ctx context.Context, idx uint64) error {
	for {
		s.mu.Lock()
		if s.applied == nil {
			s.applied = make(chan struct{})
		}
		ch := s.applied
		s.mu.Unlock()
		if s.Version() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applied != nil {
		close(s.applied)
		s.applied = nil
	}
	for _, ch := range s.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// LastIndex is the index of the last entry in this member's Raft log.
func (s *Store) LastIndex() uint64 { return s.raft.LastIndex() }

// FSMLevel is the newest command level this store's FSM applies.
func (s *Store) FSMLevel() int { return s.fsm.level }

// Halted says why this store's FSM stopped applying the log (ErrFSMTooOld),
// or nil while it applies it.
func (s *Store) Halted() error {
	if !s.fsm.isHalted.Load() {
		return nil
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.halted
}

// haltedLeader is the error for a write or consistent read on a halted
// store: as if it did not lead (it hands leadership on), so callers go to
// the next leader; nothing is proposed, so nothing commits that the caller
// is told failed, and no stale spec passes for a consistent one.
func (s *Store) haltedLeader() error {
	if err := s.Halted(); err != nil {
		return fmt.Errorf("%w: this gateway cannot apply the log and hands leadership on (%w)", ErrNotLeader, err)
	}
	return nil
}

// TransferLeadership hands leadership to another voter (the one most up to
// date), as a halted leader must: its spec is stale.
func (s *Store) TransferLeadership() error { return s.raft.LeadershipTransfer().Error() }

// TransferLeadershipTo hands leadership to the voter named id.
func (s *Store) TransferLeadershipTo(id string) error {
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv.ID == id {
			return s.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(sv.Address)).Error()
		}
	}
	return fmt.Errorf("no Raft server %q", id)
}

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's ID (node name) and Raft address, if known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderCh reports leadership changes (true: became leader).
func (s *Store) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// LastContact is when this node last heard from the leader; now if it is
// the leader.
func (s *Store) LastContact() time.Time {
	if s.IsLeader() {
		return time.Now()
	}
	return s.raft.LastContact()
}

// State is this node's Raft state (Leader, Follower, Candidate, Shutdown).
func (s *Store) State() string { return s.raft.State().String() }

// Server is a member of the Raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Voters counts the voters among servers.
func Voters(servers []Server) int {
	v := 0
	for _, s := range servers {
		if s.Voter {
			v++
		}
	}
	return v
}

// Servers lists the Raft configuration.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(sv.ID), Address: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddGateway adds a gateway to the Raft group: as a voter while there are
// fewer than MaxVoters, otherwise as a non-voter. Leader only.
func (s *Store) AddGateway(id, addr string) (voter bool, err error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	servers, err := s.Servers()
	if err != nil {
		return false, err
	}
	for _, sv := range servers {
		if sv.ID == id && sv.Address == addr {
			return sv.Voter, nil
		}
	}
	if Voters(servers) < MaxVoters {
		err = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
		return true, s.wrapRaftErr(err)
	}
	err = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error()
	return false, s.wrapRaftErr(err)
}

// Promote makes the non-voting gateway id a voter, unless MaxVoters
// already vote. Leader only.
func (s *Store) Promote(id, addr string) error {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	if v := Voters(servers); v >= MaxVoters {
		return fmt.Errorf("%d gateways already vote", v)
	}
	return s.wrapRaftErr(s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error())
}

// RemoveServer removes a gateway from the Raft group. Leader only.
func (s *Store) RemoveServer(id string) error {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	return s.wrapRaftErr(s.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error())
}

// Snapshot forces a snapshot now.
func (s *Store) Snapshot() error { return s.raft.Snapshot().Error() }

// Close shuts the member down. It does not leave the group: a restarted
// gateway resumes its seat.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		if s.observer != nil {
			s.raft.DeregisterObserver(s.observer)
		}
		err = s.raft.Shutdown().Error()
		s.trans.Close()
		s.bolt.Close()
	})
	return err
}

// tlsStream is Raft's StreamLayer over mutual TLS.
type tlsStream struct {
	ln     net.Listener
	adv    net.Addr
	client *tls.Config
	dialer *netgate.Dialer
}

func (t *tlsStream) Accept() (net.Conn, error) { return t.ln.Accept() }
func (t *tlsStream) Close() error              { return t.ln.Close() }
func (t *tlsStream) Addr() net.Addr            { return t.adv }

func (t *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, err := t.dialer.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, t.client)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}
