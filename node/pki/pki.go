// Package pki is the fleet's certificate authority: it creates the CA at
// bootstrap, issues each node a certificate naming it and its role, and builds
// the TLS configurations for the API (server), node-to-node mutual TLS, and
// the pinned first contact of a joining node. The CA's private key exists only
// on gateways; edge nodes hold their own key and certificate and the CA
// certificate.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

// Errors.
var (
	ErrPinMismatch = errors.New("the fleet's CA does not match the pin in the join token")
	ErrNotFleet    = errors.New("peer certificate is not issued by this fleet's CA")
)

// Certificate lifetimes. Node certificates are renewed when a third of their
// life is left.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	NodeLifetime = 90 * 24 * time.Hour
)

// OrgRole prefixes the role in a node certificate's Organization field.
const OrgRole = "fleetmesh-role:"

// CA is a certificate authority with its key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	KeyPEM  []byte
}

// NewCA creates a fleet CA for clusterID.
func NewCA(clusterID string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "fleetmesh CA " + clusterID, Organization: []string{"fleetmesh"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), Key: key, KeyPEM: keyPEM}, nil
}

// LoadCA parses a CA from PEM.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return &CA{Cert: cert, CertPEM: certPEM, Key: key, KeyPEM: keyPEM}, nil
}

// Pin is the CA's pin as carried in join tokens.
func (ca *CA) Pin() string { return jointoken.PinOf(ca.Cert) }

// NewKey makes a node key and its PEM.
func NewKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	p, err := encodeKey(key)
	return key, p, err
}

// CSR makes a certificate request for name with key.
func CSR(name string, key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// Sign issues a node certificate for the CSR, naming the node and its role.
// Only the name and role decided by the fleet go in; the CSR contributes its
// public key alone. ips and dnsNames are the node's API and transport names.
func (ca *CA) Sign(csrPEM []byte, name, role string, ips []net.IP, dnsNames []string) ([]byte, error) {
	return ca.Issue(csrPEM, name, role, ips, dnsNames, NewSerial(), 0)
}

// NewSerial is a random certificate serial.
func NewSerial() *big.Int { return serial() }

// Issue is Sign with a chosen serial and lifetime (0 means NodeLifetime).
// The certificate is backdated by a tenth of its life, at most 5 minutes,
// to absorb clock skew.
func (ca *CA) Issue(csrPEM []byte, name, role string, ips []net.IP, dnsNames []string, serial *big.Int, lifetime time.Duration) ([]byte, error) {
	if lifetime <= 0 {
		lifetime = NodeLifetime
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{OrgRole + role}},
		NotBefore:    time.Now().Add(-min(5*time.Minute, lifetime/10)),
		NotAfter:     time.Now().Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     append([]string{name, "localhost"}, dnsNames...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// Identity is a node's certificate, key and the fleet CA it trusts.
//
// Cert and Leaf are the certificate the node started with; the TLS configs
// built from an Identity present the current one (see SetCert), read at each
// handshake, so a renewed certificate takes effect without a restart.
type Identity struct {
	Cert   tls.Certificate
	Leaf   *x509.Certificate
	CA     *x509.Certificate
	CAPool *x509.CertPool

	cur     atomic.Pointer[tls.Certificate]
	revoked atomic.Pointer[func(*x509.Certificate) error]
}

// SetRevocationCheck installs a check asked about every peer certificate
// that chains to the fleet CA (client certificates on the servers, server
// certificates on the clients); an error refuses the handshake.
func (id *Identity) SetRevocationCheck(check func(*x509.Certificate) error) {
	id.revoked.Store(&check)
}

// SetCert replaces the certificate presented from now on (renewal). The key
// must match the certificate.
func (id *Identity) SetCert(certPEM, keyPEM []byte) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	if err := VerifyChain([]*x509.Certificate{leaf}, id.CAPool); err != nil {
		return err
	}
	pair.Certificate = append(pair.Certificate, id.CA.Raw)
	pair.Leaf = leaf
	id.cur.Store(&pair)
	return nil
}

// Current is the certificate presented now.
func (id *Identity) Current() *x509.Certificate { return id.current().Leaf }

func (id *Identity) current() *tls.Certificate {
	if c := id.cur.Load(); c != nil {
		return c
	}
	return &id.Cert
}

// checkPeer runs the revocation check on a verified peer certificate.
func (id *Identity) checkPeer(certs []*x509.Certificate) error {
	check := id.revoked.Load()
	if check == nil || *check == nil || len(certs) == 0 {
		return nil
	}
	return (*check)(certs[0])
}

// LoadIdentity builds an Identity from PEM.
func LoadIdentity(certPEM, keyPEM, caPEM []byte) (*Identity, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	ca, err := ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	// Serve the CA with the leaf so a joining node can check the pin.
	pair.Certificate = append(pair.Certificate, ca.Raw)
	pair.Leaf = leaf
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	id := &Identity{Cert: pair, Leaf: leaf, CA: ca, CAPool: pool}
	id.cur.Store(&pair)
	return id, nil
}

// ServerTLS is the API's TLS config: HTTPS with the node certificate; a
// client certificate is requested and, when given, must chain to the fleet CA
// (operators use bearer credentials and present none).
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.current(), nil },
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      id.CAPool,
		// Runs after the chain is verified (when a certificate was given).
		VerifyConnection: func(cs tls.ConnectionState) error { return id.checkPeer(cs.PeerCertificates) },
	}
}

// MutualServerTLS demands a fleet client certificate (Raft transport).
func (id *Identity) MutualServerTLS() *tls.Config {
	c := id.ServerTLS()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c
}

// ClientTLS is for node-to-node calls: presents the node certificate and
// trusts only the fleet CA. Peers are checked by CA, not by host name, since
// nodes reach each other by address.
func (id *Identity) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.current(), nil
		},
		InsecureSkipVerify: true, // verified below against the fleet CA only
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := VerifyChain(cs.PeerCertificates, id.CAPool); err != nil {
				return err
			}
			return id.checkPeer(cs.PeerCertificates)
		},
	}
}

// VerifyChain checks that certs[0] is issued by a CA in pool.
func VerifyChain(certs []*x509.Certificate, pool *x509.CertPool) error {
	if len(certs) == 0 {
		return ErrNotFleet
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotFleet, err)
	}
	return nil
}

// PinnedTLS is the TLS config a joining node uses for its first contact: it
// trusts nothing but a CA whose public key has the pin, and it reports the CA
// it found through found.
func PinnedTLS(pin string, found func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below against the pinned CA only
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				if c.IsCA && jointoken.PinMatches(c, pin) {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					if err := VerifyChain(cs.PeerCertificates, pool); err != nil {
						return err
					}
					if found != nil {
						found(c)
					}
					return nil
				}
			}
			return ErrPinMismatch
		},
	}
}

// RoleOf returns the role recorded in a node certificate.
func RoleOf(c *x509.Certificate) string {
	for _, o := range c.Subject.Organization {
		if r, ok := strings.CutPrefix(o, OrgRole); ok {
			return r
		}
	}
	return ""
}

// ParseCert parses one PEM certificate.
func ParseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// ParseKey parses a PEM EC private key.
func ParseKey(p []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("not a PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// CSRKeyID checks a PEM certificate request (format and signature) and
// returns the hex SHA-256 of its public key: what identifies the device's
// key across join attempts.
func CSRKeyID(csrPEM []byte) (string, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return "", errors.New("certificate request is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", fmt.Errorf("certificate request signature: %w", err)
	}
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return fmt.Sprintf("%x", sum), nil
}
