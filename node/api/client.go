package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one node's API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// Meta is what a read says about its freshness.
type Meta struct {
	Index       uint64
	LastContact time.Duration
	KnownLeader bool
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Code)
}

// NewClient returns a client for addr (host:port, or an https:// URL) with an
// operator credential, trusting the fleet CA in caPEM.
func NewClient(addr, token string, caPEM []byte) (*Client, error) {
	if addr == "" {
		return nil, errors.New("no node address: set FLEETMESH_ADDR or pass --addr")
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("node address %q is not host:port or a URL", addr)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the CA certificate is not PEM")
		}
		tc.RootCAs = pool
		// Nodes are reached by address and their certificates name them;
		// we check the chain to the fleet CA and leave the name to it.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("node presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("node certificate is not from this fleet's CA: %w", err)
			}
			return nil
		}
	} else if u.Scheme == "https" {
		return nil, errors.New("the API is HTTPS with the fleet's own CA: set FLEETMESH_CACERT or pass --ca-cert (bootstrap wrote it to <data-dir>/ca.pem)")
	}
	tr := &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	return &Client{base: strings.TrimRight(u.String(), "/"), token: token, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// Do sends a request and decodes a JSON answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (Meta, error) {
	var body io.Reader
	contentType := "application/json"
	if raw, ok := in.(RawBody); ok {
		body = bytes.NewReader(raw)
		contentType = "application/yaml"
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return Meta{}, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return Meta{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Meta{}, err
	}
	defer resp.Body.Close()
	meta := Meta{}
	meta.Index, _ = strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	if ms, err := strconv.ParseInt(resp.Header.Get(HeaderLastContact), 10, 64); err == nil {
		meta.LastContact = time.Duration(ms) * time.Millisecond
	}
	meta.KnownLeader = resp.Header.Get(HeaderKnownLeader) == "true"
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return meta, err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return meta, &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return meta, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return meta, nil
}

// Health is GET /v1/health.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	_, err := c.Do(ctx, http.MethodGet, "/v1/health", nil, &h)
	return &h, err
}

// Fleet is GET /v1/fleet.
func (c *Client) Fleet(ctx context.Context) (*Fleet, Meta, error) {
	var f Fleet
	m, err := c.Do(ctx, http.MethodGet, "/v1/fleet", nil, &f)
	return &f, m, err
}

// Nodes is GET /v1/nodes.
func (c *Client) Nodes(ctx context.Context) ([]Node, Meta, error) {
	var n []Node
	m, err := c.Do(ctx, http.MethodGet, "/v1/nodes", nil, &n)
	return n, m, err
}

// Node is GET /v1/nodes/{name}.
func (c *Client) Node(ctx context.Context, name string) (*Node, Meta, error) {
	var n Node
	m, err := c.Do(ctx, http.MethodGet, "/v1/nodes/"+url.PathEscape(name), nil, &n)
	return &n, m, err
}

// CreateToken is POST /v1/tokens.
func (c *Client) CreateToken(ctx context.Context, req TokenCreateRequest) (*TokenCreateResponse, error) {
	var r TokenCreateResponse
	_, err := c.Do(ctx, http.MethodPost, "/v1/tokens", req, &r)
	return &r, err
}

// Tokens is GET /v1/tokens.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var r []TokenInfo
	_, err := c.Do(ctx, http.MethodGet, "/v1/tokens", nil, &r)
	return r, err
}

// RegisterDevice is POST /v1/devices.
func (c *Client) RegisterDevice(ctx context.Context, req DeviceRegisterRequest) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodPost, "/v1/devices", req, &r)
	return &r, err
}
