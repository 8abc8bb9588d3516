package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AppDeployResult answers POST /v1/apps.
type AppDeployResult struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Index   uint64 `json:"index"`
}

// AppSummary is one application in GET /v1/apps.
type AppSummary struct {
	Name     string         `json:"name"`
	Version  string         `json:"version"`
	Versions []string       `json:"versions"`
	Type     string         `json:"type"`
	Selector map[string]any `json:"selector,omitempty"`
	// Nodes counts the devices reporting the app, by status.
	Nodes map[string]int `json:"nodes"`
}

// AppNodeStatus is the app's status on one device.
type AppNodeStatus struct {
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Status  string    `json:"status"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
	Online  bool      `json:"online"`
}

// AppVersionInfo is one deployed version.
type AppVersionInfo struct {
	Version  string    `json:"version"`
	Index    uint64    `json:"index"`
	Deployed time.Time `json:"deployed"`
}

// AppDetail is GET /v1/apps/{name}.
type AppDetail struct {
	Name     string           `json:"name"`
	Version  string           `json:"version"`
	Versions []AppVersionInfo `json:"versions"`
	Manifest map[string]any   `json:"manifest"`
	Nodes    []AppNodeStatus  `json:"nodes"`
}

// DeployApp is POST /v1/apps with a manifest (YAML or JSON).
func (c *Client) DeployApp(ctx context.Context, manifest []byte) (*AppDeployResult, error) {
	var r AppDeployResult
	_, err := c.Do(ctx, http.MethodPost, "/v1/apps", RawBody(manifest), &r)
	return &r, err
}

// Apps is GET /v1/apps.
func (c *Client) Apps(ctx context.Context) ([]AppSummary, error) {
	var r []AppSummary
	_, err := c.Do(ctx, http.MethodGet, "/v1/apps", nil, &r)
	return r, err
}

// App is GET /v1/apps/{name}.
func (c *Client) App(ctx context.Context, name string) (*AppDetail, error) {
	var r AppDetail
	_, err := c.Do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(name), nil, &r)
	return &r, err
}

// RemoveApp is DELETE /v1/apps/{name}.
func (c *Client) RemoveApp(ctx context.Context, name string) (*WriteResult, error) {
	var r WriteResult
	_, err := c.Do(ctx, http.MethodDelete, "/v1/apps/"+url.PathEscape(name), nil, &r)
	return &r, err
}

// RawBody is a request body sent as it is, not as JSON.
type RawBody []byte

// SetPolicy is POST /v1/policy with a SecurityPolicy (YAML); applyRoles
// are the roles whose devices apply it rather than only check it.
func (c *Client) SetPolicy(ctx context.Context, policy []byte, applyRoles []string) (*WriteResult, error) {
	var r WriteResult
	path := "/v1/policy"
	if len(applyRoles) > 0 {
		path += "?apply_roles=" + url.QueryEscape(strings.Join(applyRoles, ","))
	}
	_, err := c.Do(ctx, http.MethodPost, path, RawBody(policy), &r)
	return &r, err
}

// Policy is GET /v1/policy.
func (c *Client) Policy(ctx context.Context) (*PolicyStatus, error) {
	var r PolicyStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/policy", nil, &r)
	return &r, err
}
