package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/node/netgate"
	"github.com/fleetmesh/fleetmesh/node/pki"
)

// ErrJoinRefused wraps the fleet's reason for refusing a join.
var ErrJoinRefused = errors.New("join refused")

// join joins an existing fleet with the token in the config.
func (n *Node) join() error {
	tok, err := jointoken.Parse(n.cfg.Join)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	name := n.cfg.Name
	if name == "" {
		name = defaultName()
	}
	role := n.cfg.Role
	if role == "" {
		return errors.New("role: required when joining (gateway, sensor, compute, storage or hybrid)")
	}
	if err := n.listenAPI(0); err != nil {
		return err
	}
	// Everything that can fail on this side is checked before the fleet
	// commits the join: the ports must be free...
	if err := probeBind(n.cfg.Bind, true); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if role == "gateway" {
		if err := probeBind(n.cfg.RaftBind, false); err != nil {
			return fmt.Errorf("raft: %w", err)
		}
	}
	// ...and the key is on disk first, so that if something still fails
	// after the fleet said yes, a retry with the same key and token is the
	// same join rather than a second device with a taken name.
	key, keyPEM, err := n.joinKey()
	if err != nil {
		return err
	}
	csr, err := pki.CSR(name, key)
	if err != nil {
		return err
	}
	req := api.JoinRequest{TokenID: tok.ID, Secret: tok.Secret, Name: name, Role: role, Site: n.cfg.Site, Labels: n.cfg.Labels, CSR: string(csr), API: n.apiAddr, Gossip: n.cfg.Bind}
	resp, err := n.joinRetrying(tok, req)
	if err != nil {
		return err
	}
	if n.id, err = pki.LoadIdentity([]byte(resp.Cert), keyPEM, []byte(resp.CA)); err != nil {
		return fmt.Errorf("join: the fleet sent an unusable certificate: %w", err)
	}
	for _, k := range resp.GossipKeys {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return fmt.Errorf("join: the fleet sent a bad gossip key: %w", err)
		}
		n.keys = append(n.keys, raw)
	}
	n.state = persisted{Name: name, Role: role, Site: n.cfg.Site, Labels: n.cfg.Labels, ClusterID: resp.ClusterID, Addrs: tok.Addrs}
	if role == "gateway" {
		if err := n.openStore(false, 0); err != nil {
			return err
		}
		if err := n.requestRaftSeat(tok.Addrs); err != nil {
			return err
		}
	}
	if err := n.startMesh(resp.Seeds); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{fileKey, keyPEM}, {fileCert, []byte(resp.Cert)}, {fileCA, []byte(resp.CA)}} {
		if err := n.dir.write(f.name, f.data, 0o600); err != nil {
			return err
		}
	}
	if err := n.saveKeys(); err != nil {
		return err
	}
	if n.store == nil {
		// Fetch the spec now so the node answers from it at once; the sync
		// loop keeps it current.
		n.syncSpec(resp.Index)
	}
	return n.saveState()
}

// joinKey returns the key a previous, unfinished join left in the data dir,
// or makes and stores a new one.
func (n *Node) joinKey() (crypto.Signer, []byte, error) {
	if b, err := n.dir.read(fileKey); err == nil {
		if k, err := pki.ParseKey(b); err == nil {
			return k, b, nil
		}
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, nil, err
	}
	if err := n.dir.write(fileKey, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	return key, keyPEM, nil
}

// probeBind checks that addr can be bound (TCP, and UDP too if udp), so a
// join does not fail after the fleet has committed it. Port 0 always can.
func probeBind(addr string, udp bool) error {
	if portOf(addr) == 0 {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ln.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		pc.Close()
	}
	return nil
}

// Join retry backoff: the first wait, and the longest.
const (
	joinBackoffMin = time.Second
	joinBackoffMax = 30 * time.Second
)

// joinRetrying sends the join until the fleet answers it, yes or no. A
// device is often installed before its site's gateway is reachable (the
// link is down, the gateway still booting, the fleet without a leader), so
// a join that no address answered, or that the fleet could not take just
// now, is tried again with backoff: until it succeeds, the fleet refuses
// it, JoinTimeout passes, or the node is stopped. Retrying is safe: the key
// and token are the same, so a join the fleet committed but whose answer
// was lost is the same join again, not a second device.
func (n *Node) joinRetrying(tok jointoken.Token, req api.JoinRequest) (*api.JoinResponse, error) {
	var deadline time.Time
	if n.cfg.JoinTimeout > 0 {
		deadline = time.Now().Add(n.cfg.JoinTimeout)
	}
	backoff := joinBackoffMin
	for attempt := 1; ; attempt++ {
		resp, err := n.sendJoin(tok, req)
		var again *joinAgainError
		if err == nil || !errors.As(err, &again) {
			return resp, err
		}
		// Jitter spreads devices that were powered on together.
		wait := backoff/2 + rand.N(backoff/2+1)
		if again.after > wait {
			wait = again.after + rand.N(again.after/4+1)
		}
		if n.ctx.Err() != nil {
			return nil, fmt.Errorf("join: stopped while waiting for the fleet: %w", n.ctx.Err())
		}
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, fmt.Errorf("%w; gave up after %d attempts in %v (the join timeout)", err, attempt, n.cfg.JoinTimeout)
			}
			wait = min(wait, left)
		}
		n.log.Warn("join: the fleet did not take the join yet; retrying", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-n.ctx.Done():
			return nil, fmt.Errorf("%w; stopped while waiting to retry", err)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// joinAgainError is a join the fleet did not answer or could not take just
// now; it may succeed later. after is how long the fleet asked the device to
// wait (Retry-After), if it did.
type joinAgainError struct {
	err   error
	after time.Duration
}

func (e *joinAgainError) Error() string { return e.err.Error() }
func (e *joinAgainError) Unwrap() error { return e.err }

// sendJoin presents the token to the fleet's addresses in turn. The secret
// is sent only over a TLS connection whose CA matches the token's pin. A
// refusal (4xx) or a foreign fleet ends it at once; otherwise, if no address
// took the join, the error is a *joinAgainError.
func (n *Node) sendJoin(tok jointoken.Token, req api.JoinRequest) (*api.JoinResponse, error) {
	body, _ := json.Marshal(req)
	var errs []error
	var after time.Duration
	for _, addr := range tok.Addrs {
		var found *x509.Certificate
		client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			TLSClientConfig: pki.PinnedTLS(tok.Pin, func(c *x509.Certificate) { found = c }),
			DialContext:     n.dialContext,
		}}
		hr, err := http.NewRequestWithContext(n.ctx, http.MethodPost, "https://"+addr+"/v1/join", bytes.NewReader(body))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hr.Header.Set("Content-Type", "application/json")
		res, err := client.Do(hr)
		client.CloseIdleConnections()
		if err != nil {
			if errors.Is(err, pki.ErrPinMismatch) || strings.Contains(err.Error(), pki.ErrPinMismatch.Error()) {
				return nil, fmt.Errorf("join: refusing %s: %w (is the token for this fleet?); the token secret was not sent", addr, pki.ErrPinMismatch)
			}
			errs = append(errs, &unreachableError{addr: addr, err: errors.Unwrap(err)})
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			var e api.Error
			json.Unmarshal(b, &e)
			if res.StatusCode == http.StatusTooManyRequests {
				after = max(after, retryAfter(res.Header.Get("Retry-After")))
			} else if res.StatusCode >= 400 && res.StatusCode < 500 {
				return nil, fmt.Errorf("%w by %s: %s", ErrJoinRefused, addr, e.Error)
			}
			errs = append(errs, fmt.Errorf("%s: %s (HTTP %d)", addr, e.Error, res.StatusCode))
			continue
		}
		_ = found
		var jr api.JoinResponse
		if err := json.Unmarshal(b, &jr); err != nil {
			errs = append(errs, fmt.Errorf("%s: bad answer: %w", addr, err))
			continue
		}
		return &jr, nil
	}
	return nil, &joinAgainError{after: after, err: fmt.Errorf("join: no fleet address took the join: %w", errors.Join(errs...))}
}

// retryAfter reads a Retry-After header in seconds (the only form this API
// sends), capped at joinBackoffMax; 0 if absent or unreadable.
func retryAfter(v string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s <= 0 {
		return 0
	}
	return min(time.Duration(s)*time.Second, joinBackoffMax)
}

// requestRaftSeat asks the leader (through any known address) to add this
// gateway to the Raft group. It retries for a while: the leader may be
// changing.
func (n *Node) requestRaftSeat(addrs []string) error {
	body, _ := json.Marshal(raftSeatRequest{Name: n.state.Name, Addr: n.store.Addr()})
	// The FSM level goes in the query: a leader of an older binary refuses
	// unknown body fields, and ignores the query.
	path := "/internal/v1/raft/add?fsm=" + strconv.Itoa(n.store.FSMLevel())
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		targets := append([]string(nil), addrs...)
		if n.mesh != nil {
			for _, m := range n.mesh.Members() {
				if m.Alive && m.Role == "gateway" && m.Name != n.state.Name {
					targets = append(targets, m.API)
				}
			}
		}
		for _, a := range targets {
			var out api.WriteResult
			if err := n.peerCall(n.ctx, http.MethodPost, a, path, body, &out); err != nil {
				if he := (*httpError)(nil); errors.As(err, &he) && he.code == http.StatusConflict {
					return fmt.Errorf("%w: no Raft seat: %s", ErrJoinRefused, he.msg)
				}
				last = err
				continue
			}
			return nil
		}
		select {
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("join: could not get a Raft seat: %w", last)
}

type raftSeatRequest struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// handleJoin is POST /v1/join on any node, and the same request forwarded
// between nodes on /internal/v1/join: the leader processes it; any other
// node passes it to the leader over mutual TLS.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := validateJoin(&req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	n.processJoin(w, r, &req)
}

func validateJoin(req *api.JoinRequest) error {
	switch {
	case req.TokenID == "" || req.Secret == "":
		return errors.New("token_id and secret: required")
	case !ValidName(req.Name):
		return fmt.Errorf("name: %q must be lower-case letters, digits and '-'", req.Name)
	case !consensus.ValidRole(req.Role):
		return fmt.Errorf("role: %q is not one of %v", req.Role, consensus.Roles)
	case req.CSR == "":
		return errors.New("csr: required")
	}
	return validSiteLabels("", req.Site, req.Labels)
}

func (n *Node) processJoin(w http.ResponseWriter, r *http.Request, req *api.JoinRequest) {
	if !n.IsLeader() {
		leader, err := n.leaderAPI()
		if err != nil {
			writeErr(w, err)
			return
		}
		body, _ := json.Marshal(req)
		var out api.JoinResponse
		if err := n.peerCall(r.Context(), http.MethodPost, leader, "/internal/v1/join", body, &out); err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	// Check the request before it spends a use of the token.
	keyID, err := pki.CSRKeyID([]byte(req.CSR))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("csr: %w", err))
		return
	}
	// Only a holder of a real token's secret gets as far as the Raft log:
	// anyone can reach /v1/join, and each proposal is an fsync on a
	// majority of gateways. The FSM decides the rest (expiry, uses, role)
	// and checks the token again.
	hash := jointoken.HashSecret(req.TokenID, req.Secret)
	var known bool
	n.store.View(func(s *consensus.Spec) { _, known = s.TokenFor(req.TokenID, hash) })
	if !known {
		n.log.Info("join refused", "device", req.Name, "token_id", req.TokenID, "reason", consensus.ErrTokenUnknown)
		writeErr(w, consensus.ErrTokenUnknown)
		return
	}
	serial := pki.NewSerial() // recorded with the device, so eviction can revoke it
	cmd := &consensus.Command{Op: consensus.OpJoin, Join: &consensus.JoinCommand{
		TokenID: req.TokenID, TokenHash: hash,
		Device: &consensus.Device{Name: req.Name, Role: req.Role, Site: req.Site, Labels: req.Labels, CertSerial: serial.Text(16), KeyID: keyID},
	}}
	idx, err := n.store.Apply(r.Context(), cmd)
	if err != nil {
		n.log.Info("join refused", "device", req.Name, "token_id", req.TokenID, "reason", err)
		writeErr(w, err)
		return
	}
	sec := n.store.Secrets()
	var caPEM string
	n.store.View(func(s *consensus.Spec) { caPEM = s.CACertPEM })
	ca, err := pki.LoadCA([]byte(caPEM), sec.CAKeyPEM)
	if err != nil {
		writeError(w, http.StatusInternalServerError, errors.New("gateway cannot load the fleet CA"))
		return
	}
	certPEM, err := ca.Issue([]byte(req.CSR), req.Name, req.Role, hostIPs(req.API, req.Gossip), nil, serial, n.cfg.CertLifetime)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("csr: %w", err))
		return
	}
	seeds := []string{n.mesh.Addr()}
	for _, m := range n.mesh.Members() {
		if m.Alive && m.Gossip != "" && m.Name != n.state.Name {
			seeds = append(seeds, m.Gossip)
		}
	}
	n.log.Info("device joined", "device", req.Name, "role", req.Role, "token_id", req.TokenID)
	writeJSON(w, http.StatusOK, api.JoinResponse{
		ClusterID: n.state.ClusterID, Cert: string(certPEM), CA: caPEM,
		GossipKeys: []string{base64.StdEncoding.EncodeToString(sec.GossipKey)},
		Seeds:      seeds, Index: idx,
	})
}

// handleRaftAdd gives a joined gateway its Raft seat. Only a gateway's own
// certificate may ask, for itself.
func (n *Node) handleRaftAdd(w http.ResponseWriter, r *http.Request) {
	var req raftSeatRequest
	if !decodeBody(w, r, &req) {
		return
	}
	peer := peerCert(r)
	if peer == nil || peer.Subject.CommonName != req.Name || pki.RoleOf(peer) != "gateway" {
		writeError(w, http.StatusForbidden, errors.New("only a gateway may ask for its own Raft seat"))
		return
	}
	if _, _, err := net.SplitHostPort(req.Addr); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("addr: %q is not host:port", req.Addr))
		return
	}
	if !n.IsLeader() {
		leader, err := n.leaderAPI()
		if err != nil {
			writeErr(w, err)
			return
		}
		// Forwarding would present our certificate, not the requester's:
		// tell the requester where the leader is instead.
		writeError(w, http.StatusMisdirectedRequest, fmt.Errorf("not the leader; ask %s", leader))
		return
	}
	var known bool
	var level int
	n.store.View(func(s *consensus.Spec) {
		d, ok := s.Devices[req.Name]
		known = ok && d.State == consensus.DeviceJoined && d.Role == "gateway"
		level = s.Level
	})
	if !known {
		writeError(w, http.StatusForbidden, fmt.Errorf("%s is not a joined gateway of this fleet", req.Name))
		return
	}
	// A binary that cannot apply every command in the log would stop at the
	// first it cannot (consensus.ErrFSMTooOld); better it never get a seat.
	// Its level is the ?fsm= query (absent from binaries before levels: 0).
	fsm, _ := strconv.Atoi(r.URL.Query().Get("fsm"))
	if fsm < level {
		writeError(w, http.StatusConflict, fmt.Errorf("%s runs a fleetmesh binary of FSM level %d, and the fleet's Raft log holds commands of level %d: "+
			"upgrade it before it takes a Raft seat", req.Name, fsm, level))
		return
	}
	voter, err := n.store.AddGateway(req.Name, req.Addr)
	if err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("gateway added to raft", "gateway", req.Name, "voter", voter)
	writeJSON(w, http.StatusOK, api.WriteResult{Index: n.store.Version()})
}

func peerCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// peerCall is a node-to-node call over mutual TLS.
func (n *Node) peerCall(ctx context.Context, method, addr, path string, body []byte, out any) error {
	return n.peerCallAs(ctx, method, addr, path, body, out, nil)
}

// peerCallAs is peerCall on behalf of an operator: the credential goes along
// so the receiving node can check it again.
func (n *Node) peerCallAs(ctx context.Context, method, addr, path string, body []byte, out any, as *caller) error {
	return n.peerDo(ctx, method, addr, path, body, out, as, false)
}

// ErrNotGateway means a peer that should be a gateway (the source of the
// spec) presented a certificate of another role.
var ErrNotGateway = errors.New("peer is not a gateway of this fleet")

// gatewayCall is a node-to-node call whose answer must come from a
// gateway: the peer's certificate (issued by the fleet CA, not revoked)
// must carry the gateway role. What gossip says about a peer's role is not
// trusted for this.
func (n *Node) gatewayCall(ctx context.Context, method, addr, path string, out any) error {
	return n.peerDo(ctx, method, addr, path, nil, out, nil, true)
}

func (n *Node) peerDo(ctx context.Context, method, addr, path string, body []byte, out any, as *caller, needGateway bool) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if as != nil && as.cred != "" {
		req.Header.Set("Authorization", "Bearer "+as.cred)
	}
	res, err := n.peerClient().Do(req)
	if err != nil {
		return &unreachableError{addr: addr, err: err}
	}
	defer res.Body.Close()
	if needGateway && (res.TLS == nil || len(res.TLS.PeerCertificates) == 0 || pki.RoleOf(res.TLS.PeerCertificates[0]) != "gateway") {
		return fmt.Errorf("%w: %s", ErrNotGateway, addr)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return &unreachableError{addr: addr, err: err}
	}
	if res.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &httpError{code: res.StatusCode, msg: e.Error}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string { return fmt.Sprintf("%s unreachable: %v", e.addr, e.err) }
func (e *unreachableError) Unwrap() error { return e.err }

// httpError is an error with the status code to answer with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (n *Node) peerClient() *http.Client {
	n.peerOnce.Do(func() {
		n.peer = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:     n.id.ClientTLS(),
			DialContext:         n.dialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     60 * time.Second,
		}}
	})
	return n.peer
}

func (n *Node) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(n.cfg.API)
	d := &netgate.Dialer{LocalIP: host, Hook: n.cfg.Dial, Timeout: 5 * time.Second}
	return d.DialContext(ctx, network, addr)
}
