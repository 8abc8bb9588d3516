package node

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node/pki"
)

// Certificate renewal: each node renews its own certificate when a third of
// its life is left, with no operator action. It keeps its key, sends a CSR
// to a gateway over mutual TLS, authenticated by its current certificate
// (unexpired, unrevoked: the TLS handshake and member() check that), and the
// gateway records the new serial in the spec and signs a certificate for the
// same name and role. The node writes cert.pem atomically and presents the
// new certificate from its next handshake on (pki.Identity.SetCert); no
// restart. A gateway renews through any gateway, itself included.

type renewRequest struct {
	CSR string `json:"csr"`
}

type renewResponse struct {
	Cert string `json:"cert"`
}

// renewLoop renews the certificate when a third of its life is left; after
// a failure it retries every thirtieth of the lifetime (at most a minute).
func (n *Node) renewLoop() {
	defer n.wg.Done()
	for {
		cur := n.id.Current()
		life := cur.NotAfter.Sub(cur.NotBefore)
		wait := time.Until(cur.NotAfter.Add(-life / 3))
		if wait < 0 {
			wait = 0
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := n.renewCert(n.ctx); err != nil {
			if n.ctx.Err() != nil {
				return
			}
			retry := min(max(life/30, 100*time.Millisecond), time.Minute)
			n.log.Warn("certificate renewal failed; will retry", "err", err, "expires", cur.NotAfter, "retry_in", retry)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

// renewCert gets a new certificate from a gateway and starts presenting it.
func (n *Node) renewCert(ctx context.Context) error {
	keyPEM, err := n.dir.read(fileKey)
	if err != nil {
		return err
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return err
	}
	csr, err := pki.CSR(n.state.Name, key)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(renewRequest{CSR: string(csr)})
	targets := n.gatewayAPIs()
	if n.IsGateway() {
		targets = append([]string{n.apiAddr}, targets...)
	}
	var errs []error
	for _, addr := range targets {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var out renewResponse
		err := n.peerCall(cctx, http.MethodPost, addr, "/internal/v1/renew", body, &out)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cert, err := pki.ParseCert([]byte(out.Cert))
		if err != nil || cert.Subject.CommonName != n.state.Name || !cert.NotAfter.After(n.id.Current().NotAfter) {
			errs = append(errs, fmt.Errorf("%s sent an unusable certificate", addr))
			continue
		}
		if err := n.id.SetCert([]byte(out.Cert), keyPEM); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		if err := n.dir.write(fileCert, []byte(out.Cert), 0o600); err != nil {
			return fmt.Errorf("certificate renewed but not saved: %w", err)
		}
		n.log.Info("certificate renewed", "serial", cert.SerialNumber.Text(16), "expires", cert.NotAfter)
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no gateway known")
	}
	return errors.Join(errs...)
}

// handleRenew signs a renewal for the node whose certificate made the call.
func (n *Node) handleRenew(w http.ResponseWriter, r *http.Request) {
	if n.store == nil {
		writeError(w, http.StatusMisdirectedRequest, errors.New("only gateways renew certificates"))
		return
	}
	peer := peerCert(r)
	var req renewRequest
	if !decodeBody(w, r, &req) {
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		writeError(w, http.StatusBadRequest, errors.New("csr: not a PEM certificate request"))
		return
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("csr: %w", err))
		return
	}
	name, role := peer.Subject.CommonName, pki.RoleOf(peer)
	if csr.Subject.CommonName != name {
		writeError(w, http.StatusForbidden, fmt.Errorf("csr: a node may renew only its own certificate (%q asked for %q)", name, csr.Subject.CommonName))
		return
	}
	var known bool
	var caPEM string
	n.store.View(func(s *consensus.Spec) {
		d, ok := s.Devices[name]
		known = ok && d.State == consensus.DeviceJoined && d.Role == role
		caPEM = s.CACertPEM
	})
	if !known {
		writeError(w, http.StatusForbidden, fmt.Errorf("%s is not a joined %s of this fleet", name, role))
		return
	}
	ca, err := pki.LoadCA([]byte(caPEM), n.store.Secrets().CAKeyPEM)
	if err != nil {
		writeError(w, http.StatusInternalServerError, errors.New("gateway cannot load the fleet CA"))
		return
	}
	serial := pki.NewSerial()
	if _, err := n.apply(r.Context(), &consensus.Command{Op: consensus.OpRenewCert, ID: name, Serial: serial.Text(16)}); err != nil {
		writeErr(w, err)
		return
	}
	dns := slices.DeleteFunc(slices.Clone(peer.DNSNames), func(s string) bool { return s == name || s == "localhost" })
	certPEM, err := ca.Issue([]byte(req.CSR), name, role, peer.IPAddresses, dns, serial, n.cfg.CertLifetime)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("csr: %w", err))
		return
	}
	n.log.Info("certificate renewed for node", "device", name, "serial", serial.Text(16))
	writeJSON(w, http.StatusOK, renewResponse{Cert: string(certPEM)})
}
