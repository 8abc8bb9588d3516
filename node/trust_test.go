package node_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/pki"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// nodeTLS is a TLS client presenting the certificate in a node's data dir.
func nodeTLS(t *testing.T, dataDir string) *tls.Config {
	t.Helper()
	certPEM, err1 := os.ReadFile(filepath.Join(dataDir, "cert.pem"))
	keyPEM, err2 := os.ReadFile(filepath.Join(dataDir, "key.pem"))
	caPEM, err3 := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id.ClientTLS()
}

func getWith(tc *tls.Config, addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
	if strings.Contains(path, "apply") || strings.Contains(path, "join") {
		req, _ = http.NewRequest(http.MethodPost, "https://"+addr+path, strings.NewReader(`{}`))
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

// 3. A TLS client without a fleet certificate cannot reach Raft, forwarding
// or spec endpoints.
func TestNoFleetCertificateNoEntry(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	other := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	foreign := nodeTLS(t, other.Member("gw1").DataDir)
	foreign.VerifyConnection = nil // trust anything: we test the server's side

	// Raft: the handshake (or the first read after it, in TLS 1.3) fails
	// without a certificate and with another fleet's.
	raftAddr := f.Member("gw1").Node.Store().Addr()
	for name, tc := range map[string]*tls.Config{
		"no certificate":     {InsecureSkipVerify: true},
		"other fleet's cert": foreign,
	} {
		conn, err := tls.Dial("tcp", raftAddr, tc)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write([]byte{0})
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Errorf("raft with %s: connection accepted", name)
		}
	}

	// Forwarding, spec and join-forwarding endpoints: 401 without a
	// certificate; another fleet's certificate fails the handshake.
	noCert := &tls.Config{InsecureSkipVerify: true}
	for _, n := range f.Names() {
		addr := f.Member(n).Node.APIAddr()
		for _, p := range []string{"/internal/v1/apply", "/internal/v1/spec", "/internal/v1/join", "/internal/v1/keys", "/internal/v1/audit"} {
			code, body, err := getWith(noCert, addr, p)
			if err != nil || code != 401 || !strings.Contains(body, "certificate of this fleet is required") {
				t.Errorf("%s %s without certificate: %d %s %v", n, p, code, body, err)
			}
			if code, _, err := getWith(foreign, addr, p); err == nil {
				t.Errorf("%s %s with another fleet's certificate: HTTP %d, want a failed handshake", n, p, code)
			}
		}
	}

	// A fleet certificate of an edge may not write on its own: the leader
	// wants an admin credential with a forwarded write.
	s1 := nodeTLS(t, f.Member("s1").DataDir)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: s1}}
	res, err := c.Post("https://"+f.Member("gw1").Node.APIAddr()+"/internal/v1/apply", "application/json",
		strings.NewReader(`{"op":"create_operator","operator":{"id":"evil","hash":"x","role":"admin"}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 401 || !strings.Contains(string(b), "admin operator credential") {
		t.Errorf("edge certificate writing alone: %d %s", res.StatusCode, b)
	}

	// With the admin credential, the edge's forwarded write goes through and
	// is audited under the operator the leader verified, though the body
	// brought no audit entry.
	req, _ := http.NewRequest(http.MethodPost, "https://"+f.Member("gw1").Node.APIAddr()+"/internal/v1/apply",
		strings.NewReader(`{"op":"create_token","token":{"id":"fwd0123456789abc","hash":"x","role":"sensor"}}`))
	req.Header.Set("Authorization", "Bearer "+f.Admin)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("edge forwarding with the admin credential: %d %s", res.StatusCode, b)
	}
	log, err := f.Client("gw1").Audit(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var audited bool
	for _, e := range log {
		audited = audited || (e.Summary == "create_token" && e.OperatorID != "" && e.Via == "s1" && e.Result == "ok")
	}
	if !audited {
		t.Errorf("forwarded write without an audit entry was not audited: %+v", log)
	}

	// Even a gateway cannot forward the leader's own ops: a prune dated in
	// the future would delete live tokens.
	gw := &http.Client{Transport: &http.Transport{TLSClientConfig: nodeTLS(t, f.Member("gw1").DataDir)}}
	for _, op := range []string{`{"op":"prune_tokens","time":"2100-01-01T00:00:00Z","ids":["x"]}`, `{"op":"init"}`} {
		res, err := gw.Post("https://"+f.Member("gw1").Node.APIAddr()+"/internal/v1/apply", "application/json", strings.NewReader(op))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 403 || !strings.Contains(string(b), "cannot be forwarded") {
			t.Errorf("gateway forwarding %s: %d %s", op, res.StatusCode, b)
		}
	}
}

// 4. After keys rotate, all members keep talking and the old key is
// dropped from every keyring.
func TestGossipKeyRotation(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Role: "sensor"}, {Role: "compute"}}})
	ctx := context.Background()
	old := f.Member("gw1").Node.GossipKeys()
	if len(old) != 1 {
		t.Fatalf("keyring before rotation: %d keys", len(old))
	}
	if _, err := f.Client("e1").RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	var newKey []byte
	testenv.Eventually(t, 30*time.Second, func() error {
		ks, err := f.Client("e2").Keys(ctx)
		if err != nil {
			return err
		}
		if ks.Rotating || len(ks.Keys) != 1 {
			return fmt.Errorf("rotation not finished: %+v", ks)
		}
		for _, n := range f.Names() {
			ring := f.Member(n).Node.GossipKeys()
			if len(ring) != 1 || bytes.Equal(ring[0], old[0]) {
				return fmt.Errorf("%s holds %d keys (old one among them: %v)", n, len(ring), bytes.Equal(ring[0], old[0]))
			}
			if newKey == nil {
				newKey = ring[0]
			}
			if !bytes.Equal(ring[0], newKey) {
				return fmt.Errorf("%s uses another key", n)
			}
		}
		return nil
	})
	f.WaitConverged(20 * time.Second)
	// The keyring on disk follows.
	for _, n := range f.Names() {
		b, _ := os.ReadFile(filepath.Join(f.Member(n).DataDir, "gossip.keys"))
		if strings.Contains(string(b), base64.StdEncoding.EncodeToString(old[0])) || !strings.Contains(string(b), base64.StdEncoding.EncodeToString(newKey)) {
			t.Errorf("%s: gossip.keys not rotated", n)
		}
	}
	// A restarted node rejoins with the new key.
	f.Kill("e1")
	f.Restart("e1")
	f.WaitConverged(30 * time.Second)
}

// 5. After node evict, the evicted node's certificate is refused by every
// node, it is marked evicted everywhere, it never gets the new gossip key,
// and it cannot rejoin with its old data dir nor under its old name.
func TestEvict(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}, {Name: "s2", Role: "sensor"}}})
	ctx := context.Background()
	old := f.Member("gw1").Node.GossipKeys()[0]
	victimTLS := nodeTLS(t, f.Member("s1").DataDir)
	gwVictimTLS := nodeTLS(t, f.Member("gw3").DataDir)

	if _, err := f.Client("s2").Evict(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Client("gw1").Evict(ctx, "gw3"); err != nil {
		t.Fatal(err)
	}
	_, err := f.Client("gw1").Evict(ctx, "s1")
	wantStatus(t, err, 409, "already evicted")
	_, err = f.Client("gw1").Evict(ctx, "ghost")
	wantStatus(t, err, 404, "no node named")

	survivors := []string{"gw1", "gw2", "s2"}
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, n := range survivors {
			nd := f.Member(n).Node
			if !nd.Evicted("s1") || !nd.Evicted("gw3") {
				return fmt.Errorf("%s does not know of the evictions yet", n)
			}
			ring := nd.GossipKeys()
			if len(ring) != 1 || bytes.Equal(ring[0], old) {
				return fmt.Errorf("%s: gossip key not rotated yet (%d keys)", n, len(ring))
			}
		}
		// gw3 lost its Raft seat.
		leader := f.Leader()
		if leader == "" {
			return errors.New("no leader")
		}
		servers, err := f.Member(leader).Node.Store().Servers()
		if err != nil {
			return err
		}
		for _, s := range servers {
			if s.ID == "gw3" {
				return errors.New("gw3 still holds a Raft seat")
			}
		}
		return nil
	})
	// The evicted devices never got the new key.
	for _, n := range []string{"s1", "gw3"} {
		for _, k := range f.Member(n).Node.GossipKeys() {
			if !bytes.Equal(k, old) && bytes.Equal(k, f.Member("gw1").Node.GossipKeys()[0]) {
				t.Errorf("evicted %s holds the new gossip key", n)
			}
		}
	}
	// Every survivor refuses the evicted certificates on node-to-node
	// endpoints (the handshake or member() refuses them).
	for _, n := range survivors {
		for who, tc := range map[string]*tls.Config{"s1": victimTLS, "gw3": gwVictimTLS} {
			code, body, err := getWith(tc, f.Member(n).Node.APIAddr(), "/internal/v1/spec")
			if err == nil && code == 200 {
				t.Errorf("%s served its spec to evicted %s", n, who)
			}
			_ = body
		}
	}
	// Raft refuses gw3's certificate.
	conn, err := tls.Dial("tcp", f.Member("gw1").Node.Store().Addr(), gwVictimTLS)
	if err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte{0})
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Error("raft accepted an evicted gateway's certificate")
	}
	// The survivors see each other, and not the evicted.
	f.Kill("s1")
	f.Kill("gw3")
	f.WaitConverged(30 * time.Second)
	for _, n := range survivors {
		nodes, _, err := f.Client(n).Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range nodes {
			if v.Name == "s1" || v.Name == "gw3" {
				t.Errorf("%s still lists evicted %s", n, v.Name)
			}
		}
	}

	// Restarted with its old data dir, s1 stays out: it cannot join the
	// mesh (it lacks the key) nor fetch the keyring (its certificate is
	// refused).
	f.Restart("s1")
	s1 := f.Member("s1").Node
	var addrs []string
	for _, n := range survivors {
		addrs = append(addrs, f.Member(n).Node.GossipAddr())
	}
	if _, err := s1.Mesh().Join(addrs); err == nil {
		t.Error("evicted s1 joined the mesh again")
	}
	for _, n := range survivors {
		if st, err := f.NodeState(n, "s1"); err == nil {
			t.Errorf("%s lists the evicted s1 again (%s)", n, st)
		}
	}
	f.Kill("s1")

	// A new token does not bring the old name back.
	tok := f.NewToken("sensor", 1)
	if _, err := f.Join(testenv.Spec{Name: "s1-new-dir", Role: "sensor"}, tok); err != nil {
		t.Fatalf("a new name with a new token: %v", err)
	}
	cfg := f.Config(&testenv.Member{Spec: testenv.Spec{Name: "s1", Role: "sensor"}, IP: "127.0.0.1", DataDir: t.TempDir()}, false, f.NewToken("sensor", 1))
	if n, err := node.Start(cfg); err == nil || !strings.Contains(err.Error(), "evicted") {
		if n != nil {
			n.Kill()
		}
		t.Errorf("rejoin under the evicted name with a new token and data dir: %v", err)
	}
}

// Certificates are renewed when a third of their life is left, without a
// restart; the fleet keeps working past the first certificates' expiry.
func TestCertificateRenewal(t *testing.T) {
	const life = 8 * time.Second
	f := testenv.NewFleet(t, testenv.Options{Gateways: 2, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}},
		Tune: func(c *node.Config) { c.CertLifetime = life }})
	ctx := context.Background()
	first := map[string]*x509.Certificate{}
	var latest time.Time
	for _, n := range f.Names() {
		c, err := pki.ParseCert(mustRead(t, filepath.Join(f.Member(n).DataDir, "cert.pem")))
		if err != nil {
			t.Fatal(err)
		}
		first[n] = c
		if c.NotAfter.After(latest) {
			latest = c.NotAfter
		}
	}
	testenv.Eventually(t, 3*life, func() error {
		if time.Now().Before(latest.Add(time.Second)) {
			return errors.New("first certificates not expired yet")
		}
		for _, n := range f.Names() {
			c, err := pki.ParseCert(mustRead(t, filepath.Join(f.Member(n).DataDir, "cert.pem")))
			if err != nil {
				return err
			}
			if c.SerialNumber.Cmp(first[n].SerialNumber) == 0 || !c.NotAfter.After(time.Now()) {
				return fmt.Errorf("%s: certificate not renewed", n)
			}
			if c.Subject.CommonName != n || pki.RoleOf(c) != pki.RoleOf(first[n]) {
				return fmt.Errorf("%s: renewed certificate names %s/%s", n, c.Subject.CommonName, pki.RoleOf(c))
			}
		}
		return nil
	})
	// Node-to-node traffic still works: a write through the edge is
	// forwarded over mutual TLS, and the edge fetches the new spec.
	if _, err := f.Client("s1").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"}); err != nil {
		t.Fatalf("write after renewal: %v", err)
	}
	f.WaitConverged(20 * time.Second)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// 6. No secret appears in the logs, API answers or listings of a whole
// fleet run: token secrets, the CA key, gossip keys, operator credentials.
func TestNoSecretsAnywhere(t *testing.T) {
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}, {Name: "s2", Role: "compute"}},
		Log: logTo(logs)})
	ctx := context.Background()
	admin := f.Client("s1")
	var secrets []string
	tok, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, mustParse(t, tok.Token).Secret, tok.Token)
	if _, err := f.Join(testenv.Spec{Name: "s3", Role: "sensor"}, tok.Token); err != nil {
		t.Fatal(err)
	}
	v, err := admin.CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "viewer", Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, v.Credential, strings.SplitN(v.Credential, ".", 2)[1], f.Admin, strings.SplitN(f.Admin, ".", 2)[1])
	if _, err := admin.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Evict(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		ks, err := admin.Keys(ctx)
		if err != nil {
			return err
		}
		if ks.Rotating {
			return errors.New("still rotating")
		}
		return nil
	})
	// Every key the fleet ever had: the gateways' secrets now, plus what
	// each node's keyring held along the way.
	sec := f.Member("gw1").Node.Store().Secrets()
	var keys [][]byte
	keys = append(keys, sec.Keyring()...)
	for _, n := range f.Live() {
		keys = append(keys, f.Member(n).Node.GossipKeys()...)
	}
	for _, k := range keys {
		secrets = append(secrets, base64.StdEncoding.EncodeToString(k), hex.EncodeToString(k), string(k))
	}
	// The CA key: its PEM, and its private scalar (the PEM's body also
	// holds the public key, which the CA certificate shows, so its lines
	// are not grepped one by one).
	caKey, err := pki.ParseKey(sec.CAKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	d := caKey.(*ecdsa.PrivateKey).D.Bytes()
	secrets = append(secrets, string(sec.CAKeyPEM), base64.StdEncoding.EncodeToString(d), hex.EncodeToString(d), strings.ReplaceAll(string(sec.CAKeyPEM), "\n", "\\n"))

	var out bytes.Buffer
	for _, n := range f.Live() {
		for _, p := range []string{"/v1/health", "/v1/fleet", "/v1/nodes", "/v1/tokens", "/v1/acl/tokens", "/v1/audit", "/v1/keys", "/v1/nodes/gw1"} {
			var raw any
			f.Client(n).Do(ctx, http.MethodGet, p, nil, &raw)
			b, _ := jsonMarshal(raw)
			out.Write(b)
		}
	}
	// Spec copies on disk are public within the fleet: no secret there.
	for _, n := range f.Live() {
		b, _ := os.ReadFile(filepath.Join(f.Member(n).DataDir, "spec.json"))
		out.Write(b)
	}
	all := out.String() + logs.String()
	if !strings.Contains(all, "gossip key rotation") || !strings.Contains(all, "device evicted") {
		t.Fatal("the run did not log what it should have; is the log captured?")
	}
	for n, s := range secrets {
		if s != "" && strings.Contains(all, s) {
			i := strings.Index(all, s)
			t.Errorf("secret #%d (%d bytes) appears in logs or API output: ...%q...", n, len(s), all[max(0, i-200):min(len(all), i+len(s)+50)])
		}
	}
}
