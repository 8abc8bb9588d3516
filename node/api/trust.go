package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ACLTokenCreateRequest is POST /v1/acl/tokens: a new operator credential.
type ACLTokenCreateRequest struct {
	// Role is admin (may change the fleet) or viewer (may read).
	Role string `json:"role"`
	// Name says whose credential it is (shown in listings and the audit log).
	Name string `json:"name,omitempty"`
}

// ACLToken is an operator credential in listings: never its secret.
type ACLToken struct {
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked"`
}

// ACLTokenCreateResponse carries the credential: the one time it is shown.
type ACLTokenCreateResponse struct {
	Credential string `json:"credential"`
	ACLToken
	Index uint64 `json:"index"`
}

// AuditEntry is one recorded write: who, what, when, from where, result.
type AuditEntry struct {
	Index        uint64    `json:"index"`
	Time         time.Time `json:"time"`
	OperatorID   string    `json:"operator_id"`
	OperatorName string    `json:"operator_name,omitempty"`
	Role         string    `json:"role,omitempty"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Summary      string    `json:"summary,omitempty"`
	Remote       string    `json:"remote"`
	Via          string    `json:"via,omitempty"`
	Result       string    `json:"result"`
	Error        string    `json:"error,omitempty"`
}

// GossipKey is a gossip key by fingerprint (the first 8 bytes of its
// SHA-256): never the key.
type GossipKey struct {
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"`
	// Target: the rotation is moving to this key.
	Target bool `json:"target,omitempty"`
	// Nodes is how many live nodes hold the key; Using how many encrypt
	// with it.
	Nodes int `json:"nodes"`
	Using int `json:"using"`
}

// Keys is GET /v1/keys.
type Keys struct {
	Keys     []GossipKey `json:"keys"`
	Rotating bool        `json:"rotating"`
	// Lagging names live nodes that do not yet hold the target key or do
	// not yet encrypt with it (a rotation waits for them).
	Lagging []string `json:"lagging,omitempty"`
}

// CreateACLToken is POST /v1/acl/tokens.
func (c *Client) CreateACLToken(ctx context.Context, req ACLTokenCreateRequest) (*ACLTokenCreateResponse, error) {
	var r ACLTokenCreateResponse
	_, err := c.Do(ctx, http.MethodPost, "/v1/acl/tokens", req, &r)
	return &r, err
}

// ACLTokens is GET /v1/acl/tokens.
func (c *Client) ACLTokens(ctx context.Context) ([]ACLToken, error) {
	var r []ACLToken
	_, err := c.Do(ctx, http.MethodGet, "/v1/acl/tokens", nil, &r)
	return r, err
}

// RevokeACLToken is DELETE /v1/acl/tokens/{id}.
func (c *Client) RevokeACLToken(ctx context.Context, id string) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodDelete, "/v1/acl/tokens/"+url.PathEscape(id), nil, &r)
	return &r, err
}

// RevokeToken is DELETE /v1/tokens/{id}.
func (c *Client) RevokeToken(ctx context.Context, id string) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, &r)
	return &r, err
}

// Audit is GET /v1/audit: the last limit writes (0: the server's default).
func (c *Client) Audit(ctx context.Context, limit int) ([]AuditEntry, error) {
	var r []AuditEntry
	p := "/v1/audit"
	if limit > 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	_, err := c.Do(ctx, http.MethodGet, p, nil, &r)
	return r, err
}

// Keys is GET /v1/keys.
func (c *Client) Keys(ctx context.Context) (*Keys, error) {
	var r Keys
	_, err := c.Do(ctx, http.MethodGet, "/v1/keys", nil, &r)
	return &r, err
}

// RotateKeys is POST /v1/keys/rotate.
func (c *Client) RotateKeys(ctx context.Context) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodPost, "/v1/keys/rotate", struct{}{}, &r)
	return &r, err
}

// Evict is DELETE /v1/nodes/{name}.
func (c *Client) Evict(ctx context.Context, name string) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil, &r)
	return &r, err
}
