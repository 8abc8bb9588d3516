package mesh

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/node/logwriter"
	"github.com/hashicorp/memberlist"
)

// Errors.
var (
	ErrNoPeers = errors.New("no peer could be reached")
)

// Config configures the mesh. Zero timings take the defaults below.
type Config struct {
	// Bind is the gossip address (host:port; port 0 picks one).
	Bind string
	// Advertise overrides the address peers use.
	Advertise string
	// Keyring keys (16, 24 or 32 bytes); the first encrypts. Empty means
	// unencrypted gossip, which only tests may use.
	Keys [][]byte
	// Dial, if set, is consulted before each packet or connection to addr;
	// an error drops it (tests use it to partition the network).
	Dial func(addr string) error

	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	GossipInterval          time.Duration
	GossipNodes             int
	RetransmitMult          int
	PushPullInterval        time.Duration
	GossipToTheDeadTime     time.Duration
	// SuspicionFloor is the shortest suspicion after which this node's
	// view calls a failed member offline, whatever the fleet's size. See
	// DESIGN.md, "Timings".
	SuspicionFloor time.Duration

	Logger *slog.Logger
}

// Defaults tuned for the detection goal (a hard-killed node is offline on
// every peer within about a second on a LAN, at 20 members or 100):
// memberlist's LAN profile probes each second and waits several seconds of
// suspicion; we probe every 100 ms, with a shorter suspicion, hold a failed
// verdict until it has been suspected for DefaultSuspicionFloor, and lean
// on Lifeguard's local-health awareness to stretch timeouts when this node
// itself is slow.
const (
	DefaultProbeInterval           = 100 * time.Millisecond
	DefaultProbeTimeout            = 50 * time.Millisecond
	DefaultSuspicionMult           = 3
	DefaultSuspicionMaxTimeoutMult = 3
	DefaultGossipInterval          = 50 * time.Millisecond
	DefaultGossipNodes             = 4
	DefaultRetransmitMult          = 4
	DefaultPushPullInterval        = 15 * time.Second
	DefaultGossipToTheDeadTime     = 5 * time.Second
	DefaultSuspicionFloor          = 600 * time.Millisecond
)

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ProbeInterval, DefaultProbeInterval)
	def(&c.ProbeTimeout, DefaultProbeTimeout)
	defi(&c.SuspicionMult, DefaultSuspicionMult)
	defi(&c.SuspicionMaxTimeoutMult, DefaultSuspicionMaxTimeoutMult)
	def(&c.GossipInterval, DefaultGossipInterval)
	defi(&c.GossipNodes, DefaultGossipNodes)
	defi(&c.RetransmitMult, DefaultRetransmitMult)
	def(&c.PushPullInterval, DefaultPushPullInterval)
	def(&c.GossipToTheDeadTime, DefaultGossipToTheDeadTime)
	def(&c.SuspicionFloor, DefaultSuspicionFloor)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the config.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		return fmt.Errorf("mesh: bind address %q: %w", c.Bind, err)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return errors.New("mesh: probe timeout must be shorter than the probe interval")
	}
	if c.SuspicionFloor < 0 {
		return fmt.Errorf("mesh: suspicion floor %v is negative", c.SuspicionFloor)
	}
	for i, k := range c.Keys {
		if l := len(k); l != 16 && l != 24 && l != 32 {
			return fmt.Errorf("mesh: gossip key %d is %d bytes; want 16, 24 or 32", i, l)
		}
	}
	return nil
}

// Mesh is this node's membership in the gossip mesh.
type Mesh struct {
	cfg   Config
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	// keyring is memberlist's (nil when gossip is not encrypted).
	keyring *memberlist.Keyring
	log     *slog.Logger
	addr    string // advertised gossip address
	// numNodes counts live members, for the broadcast queue's retransmit limit.
	numNodes atomic.Int64
	// legacy counts live peers that read only JSON records (agents built
	// before protoRecordHeader); while there are any, records go out as
	// JSON (see outgoing).
	legacy atomic.Int64

	mu      sync.RWMutex
	local   Record
	members map[string]*Member
	subs    []chan struct{}
	// held is, per member, the generation of its last event: a failed
	// verdict held back until the suspicion floor (holdFailure) applies
	// only if no event (a NotifyJoin) came since.
	held map[string]uint64
	gen  uint64 // the last generation handed out (never reused, even after Forget)
	// after runs f after d (time.AfterFunc; tests take the call).
	after func(d time.Duration, f func())
}

// New starts the mesh with this node's identity and first health. It does
// not contact anyone: call Join.
func New(cfg Config, id Identity, h Health) (*Mesh, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newMesh(cfg, id, h)

	host, portS, _ := net.SplitHostPort(cfg.Bind)
	port, _ := strconv.Atoi(portS)
	stdlog := log.New(logwriter.New(cfg.Logger), "", 0)
	nt, err := newTransport(host, port, cfg.Dial, stdlog)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen %s: %w", cfg.Bind, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = id.Name
	mc.BindAddr = host
	mc.BindPort = nt.Port()
	mc.AdvertiseAddr = host
	if ip := net.ParseIP(host); ip.IsUnspecified() {
		// Peers cannot reach 0.0.0.0 (to them it is themselves).
		mc.AdvertiseAddr = AdvertiseIP()
	}
	mc.AdvertisePort = mc.BindPort
	if cfg.Advertise != "" {
		ah, ap, err := net.SplitHostPort(cfg.Advertise)
		if err != nil {
			nt.Shutdown()
			return nil, fmt.Errorf("mesh: advertise address %q: %w", cfg.Advertise, err)
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	mc.Transport = nt
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.RetransmitMult = cfg.RetransmitMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.DeadNodeReclaimTime = 2 * time.Second
	// No LZW: on a LAN the bytes are cheap and the CPU is not. Compressing
	// and decompressing every gossip packet was 30% of the CPU of 100
	// members in one process, enough to starve their probes into false
	// failures; records are small JSON and fit a packet either way.
	mc.EnableCompression = false
	// The delegate protocol announces which record format this agent
	// reads. The current version stays 0: memberlist refuses a member whose
	// current version passes another's maximum, and agents before the
	// record header announce 0 for both.
	mc.DelegateProtocolMin, mc.DelegateProtocolVersion, mc.DelegateProtocolMax = 0, 0, protoRecordHeader
	mc.Logger = stdlog
	mc.Delegate = &delegate{m}
	mc.Events = &events{m}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			nt.Shutdown()
			return nil, fmt.Errorf("mesh: keyring: %w", err)
		}
		mc.Keyring = kr
		m.keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		nt.Shutdown()
		return nil, fmt.Errorf("mesh: start: %w", err)
	}
	m.ml = ml
	// Read once: memberlist changes its node structs in place under its own
	// lock, so they are not read later.
	ln := ml.LocalNode()
	m.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	addr := m.addr
	m.mu.Lock()
	m.members[id.Name] = &Member{Record: m.local, Alive: true, LastSeen: time.Now(), Gossip: addr}
	m.mu.Unlock()
	return m, nil
}

// newMesh is the Mesh as memberlist's delegate and event hooks first see
// it. memberlist calls them as soon as Create starts handling packets (the
// transport listens already), before New has the *Memberlist: a node
// restarted at its old address hears its peers' gossip and push/pulls at
// once. So everything the hooks use is set here, and the hooks never use
// m.ml (see DESIGN.md).
func newMesh(cfg Config, id Identity, h Health) *Mesh {
	m := &Mesh{cfg: cfg, log: cfg.Logger, members: map[string]*Member{}, held: map[string]uint64{},
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
	m.local = Record{Identity: id, Health: h, Seq: uint64(time.Now().UnixNano()), Sent: time.Now().UTC()}
	m.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return max(1, int(m.numNodes.Load())) }, RetransmitMult: cfg.RetransmitMult}
	return m
}

// Addr is the advertised gossip address.
func (m *Mesh) Addr() string { return m.addr }

// Join contacts the given gossip addresses; it succeeds if any answers.
func (m *Mesh) Join(addrs []string) (int, error) {
	var self []string
	for _, a := range addrs {
		if a != m.Addr() {
			self = append(self, a)
		}
	}
	if len(self) == 0 {
		return 0, nil
	}
	n, err := m.ml.Join(self)
	if n == 0 {
		return 0, fmt.Errorf("%w: %v", ErrNoPeers, err)
	}
	return n, nil
}

// Update replaces this node's health and gossips it.
func (m *Mesh) Update(h Health) {
	addr := m.Addr()
	m.mu.Lock()
	m.local.Health = h
	m.local.Seq = max(m.local.Seq+1, uint64(time.Now().UnixNano()))
	m.local.Sent = time.Now().UTC()
	rec := m.local
	m.members[rec.Name] = &Member{Record: rec, Alive: true, LastSeen: time.Now(), Gossip: addr}
	m.mu.Unlock()
	m.broadcast(rec)
	m.changed()
}

func (m *Mesh) broadcast(rec Record) {
	m.queue.QueueBroadcast(&recordBroadcast{name: rec.Name, msg: m.outgoing(&rec)})
}

// Leave announces a graceful departure with reason, then leaves.
func (m *Mesh) Leave(reason string, timeout time.Duration) error {
	m.mu.Lock()
	m.local.Leaving = reason
	m.local.Seq = max(m.local.Seq+1, uint64(time.Now().UnixNano()))
	rec := m.local
	m.mu.Unlock()
	// Tell peers directly (reliable, TCP) so the reason is not lost in the
	// race with the leave message itself.
	msg := m.outgoing(&rec)
	for _, mb := range m.Members() {
		if mb.Name == rec.Name || !mb.Alive {
			continue
		}
		host, port, err := net.SplitHostPort(mb.Gossip)
		if err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		_ = m.ml.SendReliable(&memberlist.Node{Name: mb.Name, Addr: net.ParseIP(host), Port: uint16(p)}, msg)
	}
	return m.ml.Leave(timeout)
}

// Shutdown stops gossip at once, without a leave message: to peers it looks
// like a crash.
func (m *Mesh) Shutdown() error { return m.ml.Shutdown() }

// Members returns a copy of every member this node knows of, alive or not,
// sorted by name.
func (m *Mesh) Members() []Member {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Member, 0, len(m.members))
	for _, mb := range m.members {
		c := *mb
		if c.Name == m.local.Name {
			c.LastSeen = time.Now()
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Member returns one member by name.
func (m *Mesh) Member(name string) (Member, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mb, ok := m.members[name]
	if !ok {
		return Member{}, false
	}
	c := *mb
	if c.Name == m.local.Name {
		c.LastSeen = time.Now()
	}
	return c, true
}

// Alive reports whether this node's view has the member alive, and whether
// it knows the member at all; unlike Member it copies nothing.
func (m *Mesh) Alive(name string) (alive, known bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mb, ok := m.members[name]
	return ok && mb.Alive, ok
}

// Forget drops a member from this node's view (after eviction).
func (m *Mesh) Forget(name string) {
	m.mu.Lock()
	delete(m.members, name)
	delete(m.held, name)
	m.mu.Unlock()
	m.changed()
}

// AliveGossipAddrs returns the gossip addresses of live members other than
// this node (for rejoining after a restart).
func (m *Mesh) AliveGossipAddrs() []string {
	// Our own view, kept from memberlist's events: the *Node values that
	// memberlist.Members returns are changed in place under its lock, so
	// reading them here would race.
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for _, mb := range m.members {
		if mb.Alive && mb.Name != m.local.Name && mb.Gossip != "" {
			out = append(out, mb.Gossip)
		}
	}
	sort.Strings(out)
	return out
}

// Subscribe returns a channel signalled when the view changes.
func (m *Mesh) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs = append(m.subs, ch)
	m.mu.Unlock()
	return ch
}

func (m *Mesh) changed() {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// merge takes a record heard from a peer; it reports whether it was news.
func (m *Mesh) merge(r *Record) bool {
	if r.Name == "" {
		return false
	}
	m.mu.Lock()
	if r.Name == m.local.Name {
		// Someone holds a record of us with a higher Seq than ours (from
		// before a restart, if the clock went back): make sure ours wins.
		// Our current record coming back to us (the same Seq) is not news:
		// bumping Seq on it would make every node's record circle the mesh
		// forever.
		if r.Seq > m.local.Seq {
			m.local.Seq = r.Seq + 1
			rec := m.local
			m.mu.Unlock()
			m.broadcast(rec)
			return false
		}
		m.mu.Unlock()
		return false
	}
	old, ok := m.members[r.Name]
	if ok && old.Seq >= r.Seq {
		m.mu.Unlock()
		return false
	}
	// A record alone does not make a member alive: memberlist's verdict
	// does (NotifyJoin), whether it comes before or after the record.
	mb := &Member{Record: *r, LastSeen: time.Now()}
	if ok {
		mb.Alive, mb.proto = old.Alive, old.proto
		mb.Gossip = old.Gossip
		mb.OfflineReason = old.OfflineReason
		if !old.Alive && r.Leaving == "" {
			mb.LastSeen = old.LastSeen
		}
	}
	if r.Leaving != "" {
		mb.OfflineReason = "left: " + r.Leaving
	}
	m.members[r.Name] = mb
	m.mu.Unlock()
	m.changed()
	return true
}

func (m *Mesh) setAlive(n *memberlist.Node, alive bool) {
	gossip := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	failed := !alive && n.State != memberlist.StateLeft
	hold := m.holdFailure()
	m.mu.Lock()
	mb, ok := m.members[n.Name]
	if !ok {
		mb = &Member{Record: Record{Identity: Identity{Name: n.Name}}}
		m.members[n.Name] = mb
	}
	mb.Gossip = gossip
	m.gen++
	m.held[n.Name] = m.gen // any news about the member cancels a verdict held back
	switch {
	case alive:
		m.setAliveLocked(mb, true, n.DMax)
		mb.OfflineReason = ""
		mb.LastSeen = time.Now()
	case n.Name == m.local.Name:
	case failed && mb.Leaving == "" && hold > 0:
		name, gen := n.Name, m.gen
		m.after(hold, func() { m.markOffline(name, gen) })
		m.mu.Unlock()
		return
	default:
		m.offlineLocked(mb, n.State == memberlist.StateLeft)
	}
	m.mu.Unlock()
	m.changed()
}

// holdFailure is how long a failed verdict waits before this node's view
// says offline: memberlist suspects a member for SuspicionMult ×
// log10(N) × ProbeInterval before it declares it dead, which is shorter than
// the suspicion floor in a small fleet. The wait makes up the difference,
// so a starved member that refutes late is not called offline (DESIGN.md,
// "Timings").
func (m *Mesh) holdFailure() time.Duration {
	n := float64(max(1, m.numNodes.Load()))
	suspicion := time.Duration(float64(m.cfg.SuspicionMult) * math.Max(1, math.Log10(n)) * float64(m.cfg.ProbeInterval))
	return m.cfg.SuspicionFloor - suspicion
}

// markOffline applies a failed verdict held back by setAlive, unless news of
// the member came since (gen moved on).
func (m *Mesh) markOffline(name string, gen uint64) {
	m.mu.Lock()
	mb, ok := m.members[name]
	if !ok || m.held[name] != gen {
		m.mu.Unlock()
		return
	}
	m.offlineLocked(mb, false)
	m.mu.Unlock()
	m.changed()
}

// offlineLocked marks mb offline with its reason; m.mu is held.
func (m *Mesh) offlineLocked(mb *Member, left bool) {
	m.setAliveLocked(mb, false, mb.proto)
	switch {
	case mb.Leaving != "":
		mb.OfflineReason = "left: " + mb.Leaving
	case left:
		mb.OfflineReason = "left"
	default:
		mb.OfflineReason = "failed: no response to probes"
	}
}

// setAliveLocked sets a member's liveness and record format, and keeps the
// counts derived from them: live members (numNodes) and live peers that
// read only JSON records (legacy); m.mu is held.
func (m *Mesh) setAliveLocked(mb *Member, alive bool, proto uint8) {
	switch {
	case alive && !mb.Alive:
		m.numNodes.Add(1)
	case !alive && mb.Alive:
		m.numNodes.Add(-1)
	}
	legacy := func() bool { return mb.Name != m.local.Name && mb.Alive && mb.proto < protoRecordHeader }
	if legacy() {
		m.legacy.Add(-1)
	}
	mb.Alive, mb.proto = alive, proto
	if legacy() {
		m.legacy.Add(1)
	}
}

// outgoing is r as this node sends it: with the header, unless a live peer
// reads only JSON records.
func (m *Mesh) outgoing(r *Record) []byte {
	return encodeRecordMsg(r, m.legacy.Load() == 0)
}

// Record messages. A record heard by gossip is mostly one this node already
// has: every node rebroadcasts news (invariant 5), so each record arrives
// about RetransmitMult x log10(N) times. msgRecord puts the sender's name
// and Seq before the JSON, so those copies are dropped without decoding
// them (at N = 100 in one process, decoding them all was the largest
// cost of the mesh after memberlist itself).
const (
	// msgRecordJSON is the record alone, as JSON: all that agents built
	// before 2026-11-29 read and send, so it is still read, and sent while
	// such an agent is in the mesh (mixed versions during an upgrade).
	msgRecordJSON byte = 1
	// msgRecord is Seq (8 bytes, big-endian), the name's length (1 byte),
	// the name, then the record as JSON.
	msgRecord byte = 2
	// protoRecordHeader is the delegate protocol version of agents that
	// read msgRecord.
	protoRecordHeader uint8 = 2
)

// recordMsg is r as a msgRecord (with the header).
func recordMsg(r *Record) []byte { return encodeRecordMsg(r, true) }

// encodeRecordMsg is r as a msgRecord, or as a msgRecordJSON when header is
// false or the name does not fit the header's length byte.
func encodeRecordMsg(r *Record, header bool) []byte {
	js := r.encode()
	if !header || len(r.Name) > 255 {
		return append(append(make([]byte, 0, 1+len(js)), msgRecordJSON), js...)
	}
	b := make([]byte, 0, 10+len(r.Name)+len(js))
	b = append(b, msgRecord)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = append(b, byte(len(r.Name)))
	b = append(b, r.Name...)
	return append(b, js...)
}

// isNews reports whether a record of name with seq would change this
// node's view: a member it has no newer record of, or itself with a Seq
// above its own (merge handles that case).
func (m *Mesh) isNews(name []byte, seq uint64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if string(name) == m.local.Name {
		return seq > m.local.Seq
	}
	mb, ok := m.members[string(name)]
	return !ok || mb.Seq < seq
}

type delegate struct{ m *Mesh }

func (d *delegate) NodeMeta(limit int) []byte { return nil }

func (d *delegate) NotifyMsg(b []byte) {
	if len(b) < 2 {
		return
	}
	var seq uint64
	var name []byte
	body := b[1:]
	switch b[0] {
	case msgRecord:
		if len(b) < 10 || len(b) < 10+int(b[9]) {
			return
		}
		seq, name = binary.BigEndian.Uint64(b[1:9]), b[10:10+int(b[9])]
		if !d.m.isNews(name, seq) {
			return
		}
		body = b[10+len(name):]
	case msgRecordJSON:
	default:
		return
	}
	var r Record // declared here: it escapes, and copies never get this far
	if err := json.Unmarshal(body, &r); err != nil {
		return
	}
	if b[0] == msgRecord && (r.Name != string(name) || r.Seq != seq) {
		return
	}
	if !d.m.merge(&r) {
		return
	}
	// Rebroadcast news so it spreads epidemically even when the sender's
	// own retransmissions run out: the message as it came (memberlist
	// reuses b), or re-encoded when its format is not the one to send.
	if b[0] == msgRecord && d.m.legacy.Load() == 0 {
		d.m.queue.QueueBroadcast(&recordBroadcast{name: r.Name, msg: bytes.Clone(b)})
	} else {
		d.m.broadcast(r)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	d.m.mu.RLock()
	recs := make([]Record, 0, len(d.m.members))
	for _, mb := range d.m.members {
		if mb.Alive {
			recs = append(recs, mb.Record)
		}
	}
	d.m.mu.RUnlock()
	b, _ := json.Marshal(recs)
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	var recs []Record
	if err := json.Unmarshal(buf, &recs); err != nil {
		return
	}
	for i := range recs {
		d.m.merge(&recs[i])
	}
}

type events struct{ m *Mesh }

func (e *events) NotifyJoin(n *memberlist.Node)   { e.m.setAlive(n, true) }
func (e *events) NotifyLeave(n *memberlist.Node)  { e.m.setAlive(n, false) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.m.updateProto(n) }

// updateProto takes a member's new delegate protocol (an agent restarted
// with another version at the same name).
func (m *Mesh) updateProto(n *memberlist.Node) {
	m.mu.Lock()
	if mb, ok := m.members[n.Name]; ok && mb.Alive {
		m.setAliveLocked(mb, true, n.DMax)
	}
	m.mu.Unlock()
}

type recordBroadcast struct {
	name string
	msg  []byte
}

// A newer record of a node replaces the older one in the queue. Name makes
// it a memberlist.NamedBroadcast, which memberlist replaces by a map
// lookup; without it every enqueue walked the whole queue calling
// Invalidates (6% of the CPU at N = 100).
func (b *recordBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(memberlist.NamedBroadcast)
	return ok && ob.Name() == b.Name()
}
func (b *recordBroadcast) Name() string    { return b.name } // the queue holds records alone
func (b *recordBroadcast) Message() []byte { return b.msg }
func (b *recordBroadcast) Finished()       {}

// ReconnectTarget picks a failed member (not one that left) for this node
// to knock on, or "" if none this time. Called once per reconnect interval
// on every node, it picks with probability failed / alive, as serf does:
// the fleet as a whole knocks on each failed member about once per
// interval, so a healed partition merges again without 100 nodes each
// pushing their whole state at the same few members (which, at N = 100 on
// one machine, starved probes into more false failures: a collapse).
func (m *Mesh) ReconnectTarget() string {
	m.mu.RLock()
	var failed []string
	alive := 0
	for _, mb := range m.members {
		switch {
		case mb.Alive:
			alive++
		case mb.Leaving == "" && mb.Gossip != "" && mb.Name != m.local.Name:
			failed = append(failed, mb.Gossip)
		}
	}
	m.mu.RUnlock()
	if len(failed) == 0 || rand.Float64() >= float64(len(failed))/float64(max(1, alive)) {
		return ""
	}
	return failed[rand.IntN(len(failed))]
}

// NumAlive is the number of live members, this node included.
func (m *Mesh) NumAlive() int { return m.ml.NumMembers() }
