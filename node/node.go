package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node/netgate"
	"github.com/fleetmesh/fleetmesh/node/pki"
)

// Errors of starting and stopping a node.
var (
	ErrNoFleet = errors.New("this data dir holds no fleet membership: pass --bootstrap to create a fleet or --join TOKEN to join one")
	// ErrStopping answers a request that arrives while the node stops.
	ErrStopping = errors.New("this node is stopping; ask another node")
)

// Node is one running fleetmesh agent.
type Node struct {
	cfg      Config
	log      *slog.Logger
	dir      *dataDir
	state    persisted
	id       *pki.Identity
	keys     [][]byte
	mesh     *mesh.Mesh
	store    *consensus.Store // gateways only
	apiLn    net.Listener
	apiAddr  string
	srv      *http.Server
	peer     *http.Client
	peerOnce sync.Once
	started  time.Time
	metrics  *metrics
	trust    trustState
	// joinLimit counts failed joins per source address (joinlimit.go).
	joinLimit *joinLimiter
	// haltLogged, haltWarned: the FSM halt was logged, and when the last
	// leadership hand-off was (healthLoop only).
	haltLogged bool
	haltWarned time.Time
	// promoteChecked is when the leader last looked for a voter seat to
	// fill (trustLoop only).
	promoteChecked time.Time

	reconciler *apps.Reconciler // nil when the runtime is off
	docker     *apps.DockerDriver
	healthKick chan struct{}
	specCh     chan struct{}

	// reqs counts the API requests being served: stop waits for them, as
	// http.Server.Close does not, so that no request of a stopped node goes
	// on using its peer client, store, mesh or data dir (which the node
	// restarted from it may own by then). Once stopping is set, no request
	// starts.
	reqMu    sync.RWMutex
	stopping bool
	reqs     sync.WaitGroup

	complianceMu sync.Mutex
	compliance   *mesh.Compliance

	catchUpMu sync.Mutex // one read-your-write spec fetch at a time

	tokensChecked time.Time // trustLoop's last look for tokens to prune

	specMu sync.RWMutex
	spec   *consensus.Spec // edges: the local copy, read-only; gateways read the store
	// specDirty: spec changed (by a delta) since it was last saved.
	specDirty bool

	// OperatorToken is the admin credential created at bootstrap (empty
	// otherwise). It is also in <data-dir>/operator.token.
	OperatorToken string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start starts a node: it creates a fleet (Bootstrap), joins one (Join), or
// resumes the membership stored in the data dir.
func Start(cfg Config) (*Node, error) { return StartContext(context.Background(), cfg) }

// StartContext is Start, given up (cleanly, nothing half-written) if ctx
// ends before the node is up: a join can wait a long time for its fleet.
// Once the node is up, ctx no longer matters; Close stops it.
func StartContext(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if prev, err := readPersisted(cfg.DataDir); err == nil {
		if err := cfg.inherit(prev); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	cfg.setDefaults()
	dir, err := openDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, dir: dir, started: time.Now(), ctx: nctx, cancel: cancel,
		healthKick: make(chan struct{}, 1), specCh: make(chan struct{}, 1)}
	n.log = cfg.Logger
	n.joinLimit = newJoinLimiter(n.now)
	starting := context.AfterFunc(ctx, cancel)
	defer starting()
	switch {
	case dir.exists(fileState):
		if cfg.Join != "" || cfg.Bootstrap {
			n.log.Info("data dir already holds a membership; ignoring --join/--bootstrap", "data_dir", cfg.DataDir)
		}
		err = n.resume()
	case cfg.Bootstrap:
		err = n.bootstrap()
	case cfg.Join != "":
		err = n.join()
	default:
		err = ErrNoFleet
	}
	if err == nil && !starting() {
		err = fmt.Errorf("stopped while starting: %w", ctx.Err())
	}
	if err != nil {
		n.abort()
		return nil, err
	}
	n.metrics = newMetrics(n)
	n.startTrust()
	n.startApps()
	n.serve()
	n.wg.Add(4)
	go n.policyLoop()
	go n.healthLoop()
	go n.peersLoop()
	go n.reconnectLoop()
	if n.store == nil {
		n.wg.Add(1)
		go n.specSyncLoop()
	}
	n.log.Info("node started", "name", n.state.Name, "role", n.state.Role, "api", n.apiAddr, "gossip", n.mesh.Addr())
	return n, nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.state.Name }

// Role is the node's role.
func (n *Node) Role() string { return n.state.Role }

// APIAddr is the advertised HTTPS API address.
func (n *Node) APIAddr() string { return n.apiAddr }

// GossipAddr is the advertised gossip address.
func (n *Node) GossipAddr() string { return n.mesh.Addr() }

// CAPEM is the fleet CA certificate.
func (n *Node) CAPEM() []byte { b, _ := n.dir.read(fileCA); return b }

// IsGateway reports whether this node runs Raft.
func (n *Node) IsGateway() bool { return n.state.Role == "gateway" }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.store != nil && n.store.IsLeader() }

// Store is the node's Raft store (nil on edge nodes).
func (n *Node) Store() *consensus.Store { return n.store }

// Mesh is the node's gossip membership.
func (n *Node) Mesh() *mesh.Mesh { return n.mesh }

func (n *Node) isGatewayRole() bool { return n.cfg.Role == "gateway" || n.state.Role == "gateway" }

// listenAPI opens the API listener, preferring the remembered port.
func (n *Node) listenAPI(remembered int) error {
	addr := withPort(n.cfg.API, remembered)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen %s: %w", addr, err)
	}
	n.apiLn = netgate.Listener(ln, n.cfg.Dial)
	n.apiAddr = advertised(n.cfg.AdvertiseAPI, ln.Addr().String(), n.cfg.Bind)
	if n.isGatewayRole() && isLoopback(n.apiAddr) && !isLoopback(net.JoinHostPort(advertiseHost(n.cfg.Bind), "0")) {
		// Other devices join, copy the spec and forward writes through a
		// gateway's API. (A data dir from before the API followed the
		// gossip host may have stored 127.0.0.1:7400.)
		n.log.Warn("this gateway's API is on a loopback address while gossip faces the network: other devices cannot join, copy the spec or forward writes through it; start it once with --api HOST:7400 (or --advertise-api) at an address they reach, and the data dir keeps it",
			"api", n.apiAddr, "bind", n.cfg.Bind)
	}
	return nil
}

// isLoopback reports whether host:port names a loopback address.
func isLoopback(addr string) bool {
	h, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}

// withPort replaces a 0 port with a remembered one.
func withPort(addr string, remembered int) string {
	host, port, _ := net.SplitHostPort(addr)
	if port == "0" && remembered > 0 {
		return net.JoinHostPort(host, strconv.Itoa(remembered))
	}
	return addr
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	v, _ := strconv.Atoi(p)
	return v
}

// advertiseHost is the host to advertise for a listener on every address:
// the gossip bind's host if it is a specific one, else mesh.AdvertiseIP.
func advertiseHost(gossipBind string) string {
	gh, _, _ := net.SplitHostPort(gossipBind)
	if gip := net.ParseIP(gh); gip != nil && !gip.IsUnspecified() {
		return gh
	}
	return mesh.AdvertiseIP()
}

// advertised picks the address peers should use for a listener.
func advertised(override, bound, gossipBind string) string {
	if override != "" {
		return override
	}
	host, port, _ := net.SplitHostPort(bound)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort(advertiseHost(gossipBind), port)
	}
	return bound
}

func hostIPs(addrs ...string) []net.IP {
	var ips []net.IP
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

func defaultName() string {
	h, err := os.Hostname()
	if err != nil || !ValidName(h) {
		b := make([]byte, 3)
		rand.Read(b)
		return "node-" + hex.EncodeToString(b)
	}
	return h
}

// bootstrap creates a new fleet with this node as its first gateway.
func (n *Node) bootstrap() error {
	name := n.cfg.Name
	if name == "" {
		name = defaultName()
	}
	cid := make([]byte, 6)
	rand.Read(cid)
	clusterID := hex.EncodeToString(cid)
	ca, err := pki.NewCA(clusterID)
	if err != nil {
		return err
	}
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		return err
	}
	if err := n.listenAPI(0); err != nil {
		return err
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, _ := pki.CSR(name, key)
	certPEM, err := ca.Issue(csr, name, "gateway", hostIPs(n.apiAddr, n.cfg.Bind, n.cfg.RaftBind), nil, pki.NewSerial(), n.cfg.CertLifetime)
	if err != nil {
		return err
	}
	if n.id, err = pki.LoadIdentity(certPEM, keyPEM, ca.CertPEM); err != nil {
		return err
	}
	n.state = persisted{Name: name, Role: "gateway", Site: n.cfg.Site, Labels: n.cfg.Labels, ClusterID: clusterID}
	n.keys = [][]byte{gossipKey}
	if err := n.openStore(true, 0); err != nil {
		return err
	}
	if err := waitFor(10*time.Second, n.store.IsLeader); err != nil {
		return fmt.Errorf("bootstrap: this gateway did not become leader of its new cluster: %w", err)
	}
	opCred, op, err := newOperator(consensus.OperatorAdmin, "bootstrap")
	if err != nil {
		return err
	}
	cmd := &consensus.Command{Op: consensus.OpInit, Init: &consensus.InitCommand{
		ClusterID: clusterID, CACertPEM: string(ca.CertPEM),
		Secrets: consensus.Secrets{CAKeyPEM: ca.KeyPEM, GossipKey: gossipKey},
		Admin:   op,
		Device: &consensus.Device{Name: name, Role: "gateway", Site: n.cfg.Site, Labels: n.cfg.Labels, State: consensus.DeviceJoined, JoinedAt: time.Now().UTC(),
			CertSerial: n.id.Leaf.SerialNumber.Text(16)},
	}}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.store.Apply(ctx, cmd); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := n.startMesh(nil); err != nil {
		return err
	}
	n.OperatorToken = opCred
	files := []struct {
		name string
		data []byte
	}{{fileKey, keyPEM}, {fileCert, certPEM}, {fileCA, ca.CertPEM}, {fileOperator, []byte(opCred + "\n")}}
	for _, f := range files {
		if err := n.dir.write(f.name, f.data, 0o600); err != nil {
			return err
		}
	}
	if err := n.saveKeys(); err != nil {
		return err
	}
	return n.saveState()
}

// openStore starts Raft (gateways).
func (n *Node) openStore(bootstrap bool, rememberedPort int) error {
	rc := n.cfg.Raft
	rc.OldFSM = n.cfg.OldFSM
	rc.NodeID = n.state.Name
	rc.Dir = n.dir.file(dirRaft)
	rc.Bind = withPort(n.cfg.RaftBind, rememberedPort)
	rc.Advertise = ""
	rc.AdvertiseHost = advertiseHost(n.cfg.Bind)
	rc.ServerTLS = n.id.MutualServerTLS()
	rc.ClientTLS = n.id.ClientTLS()
	rc.Dial = n.cfg.Dial
	rc.Bootstrap = bootstrap
	rc.Logger = n.log.With("component", "raft")
	st, err := consensus.Open(rc)
	if err != nil {
		return err
	}
	n.store = st
	n.state.RaftPort = portOf(st.Addr())
	return nil
}

// startMesh starts gossip and joins seeds (failure to reach them is not
// fatal: the reconnect loop keeps trying, so a node cut off from the fleet
// still starts and runs).
func (n *Node) startMesh(seeds []string) error {
	mc := n.cfg.Mesh
	mc.Bind = withPort(n.cfg.Bind, n.state.GossipPort)
	mc.Keys = n.keys
	mc.Dial = n.cfg.Dial
	mc.Logger = n.log.With("component", "mesh")
	m, err := mesh.New(mc, n.identity(), n.health())
	if err != nil {
		return err
	}
	n.mesh = m
	n.state.GossipPort = portOf(m.Addr())
	n.state.APIPort = portOf(n.apiAddr)
	if len(seeds) > 0 {
		if _, err := m.Join(seeds); err != nil {
			n.log.Warn("no peer reachable yet; will keep trying", "err", err)
		}
	}
	return nil
}

func (n *Node) identity() mesh.Identity {
	id := mesh.Identity{Name: n.state.Name, Role: n.state.Role, Site: n.state.Site, Labels: n.state.Labels, API: n.apiAddr, Version: Version}
	if n.store != nil {
		id.Raft = n.store.Addr()
		id.FSM = n.store.FSMLevel()
	}
	return id
}

// raftFSMLevel is the newest FSM level every Raft server applies, by what
// each gossips (this node included: the mesh holds its own record; a server
// this node has not heard of counts as level 0).
func (n *Node) raftFSMLevel() int {
	servers, err := n.store.Servers()
	if err != nil {
		return 0
	}
	level := consensus.FSMLevel
	for _, sv := range servers {
		m, ok := n.mesh.Member(sv.ID)
		if !ok {
			return 0
		}
		level = min(level, m.FSM)
	}
	return level
}

func (n *Node) saveState() error {
	n.state.Bind, n.state.API, n.state.Raft, n.state.AdvertiseAPI = n.cfg.Bind, n.cfg.API, n.cfg.RaftBind, n.cfg.AdvertiseAPI
	return n.dir.writeJSON(fileState, n.state)
}

func (n *Node) saveKeys() error {
	var ks []string
	for _, k := range n.keys {
		ks = append(ks, base64.StdEncoding.EncodeToString(k))
	}
	b, _ := json.Marshal(ks)
	return n.dir.write(fileGossip, b, 0o600)
}

// resume restarts from the data dir, with no token.
func (n *Node) resume() error {
	b, err := n.dir.read(fileState)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &n.state); err != nil {
		return fmt.Errorf("data dir: %s is corrupt: %w", fileState, err)
	}
	keyPEM, err1 := n.dir.read(fileKey)
	certPEM, err2 := n.dir.read(fileCert)
	caPEM, err3 := n.dir.read(fileCA)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("data dir: identity files missing: %w", err)
	}
	if n.id, err = pki.LoadIdentity(certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	kb, err := n.dir.read(fileGossip)
	if err != nil {
		return fmt.Errorf("data dir: gossip keys: %w", err)
	}
	var ks []string
	if err := json.Unmarshal(kb, &ks); err != nil {
		return fmt.Errorf("data dir: %s is corrupt: %w", fileGossip, err)
	}
	for _, k := range ks {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return fmt.Errorf("data dir: %s is corrupt: %w", fileGossip, err)
		}
		n.keys = append(n.keys, raw)
	}
	if op, err := n.dir.read(fileOperator); err == nil {
		n.OperatorToken = string(trimNL(op))
	}
	if err := n.listenAPI(n.state.APIPort); err != nil {
		return err
	}
	if n.state.Role == "gateway" {
		if err := n.openStore(false, n.state.RaftPort); err != nil {
			return err
		}
	} else if sb, err := n.dir.read(fileSpec); err == nil {
		if sp, err := consensus.DecodeSpec(sb); err == nil {
			n.spec = sp
		} else {
			n.log.Warn("stored spec copy is unreadable; will fetch it again", "err", err)
		}
	}
	var peers []string
	if pb, err := n.dir.read(filePeers); err == nil {
		json.Unmarshal(pb, &peers)
	}
	if err := n.startMesh(peers); err != nil {
		return err
	}
	if n.store != nil && !n.store.HasState() {
		// Joined but never got a Raft seat (crash in between): ask again.
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.requestRaftSeat(n.state.Addrs) }()
	}
	return n.saveState()
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Close leaves the fleet gracefully (peers see "left: shutdown") and stops.
func (n *Node) Close() error { return n.stop(true, "shutdown") }

// Kill stops the node abruptly, as a crash or power loss would: no leave
// message, no leadership hand-off.
func (n *Node) Kill() error { return n.stop(false, "") }

func (n *Node) stop(graceful bool, reason string) error {
	var err error
	n.once.Do(func() {
		if graceful && n.mesh != nil {
			if p := n.mesh.AliveGossipAddrs(); len(p) > 0 {
				n.dir.writeJSON(filePeers, p)
			}
			n.mesh.Leave(reason, time.Second)
		}
		n.cancel()
		if n.srv != nil {
			if graceful {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if n.srv.Shutdown(ctx) != nil {
					n.srv.Close() // the requests still running see their contexts end
				}
				cancel()
			} else {
				n.srv.Close()
			}
		}
		n.reqMu.Lock()
		n.stopping = true
		n.reqMu.Unlock()
		if n.mesh != nil {
			n.mesh.Shutdown()
		}
		if n.store != nil {
			err = n.store.Close()
		}
		// Requests waiting on Raft end with the store; those calling peers
		// end with their connection's context.
		n.reqs.Wait()
		n.wg.Wait()
		if n.docker != nil {
			n.docker.Close()
		}
		if n.peer != nil {
			n.peer.CloseIdleConnections()
		}
		n.dir.close()
	})
	return err
}

// abort undoes a failed start.
func (n *Node) abort() {
	n.cancel()
	if n.apiLn != nil {
		n.apiLn.Close()
	}
	if n.mesh != nil {
		n.mesh.Shutdown()
	}
	if n.store != nil {
		n.store.Close()
	}
	n.wg.Wait()
	n.dir.close()
}
