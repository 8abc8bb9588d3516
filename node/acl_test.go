package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// 2. Requests without a credential, with a viewer credential on a write, or
// with a revoked credential are refused with 401/403 and a clear JSON error;
// the audit log records writes.
func TestOperatorRolesAndAudit(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	ctx := context.Background()
	admin := f.Client("s1") // writes through an edge are forwarded to the leader

	viewer, err := admin.CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "viewer", Name: "dashboard"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(viewer.Credential, "fmop:") || viewer.Role != "viewer" || viewer.Index == 0 {
		t.Fatalf("viewer credential: %+v", viewer.ACLToken)
	}
	ops, err := admin.CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "admin", Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "root"})
	wantStatus(t, err, 400, "admin or viewer")

	for _, n := range f.Names() {
		v := f.ClientWith(n, viewer.Credential)
		// A viewer reads...
		if _, _, err := v.Fleet(ctx); err != nil {
			t.Errorf("%s: viewer cannot read: %v", n, err)
		}
		if _, err := v.Keys(ctx); err != nil {
			t.Errorf("%s: viewer cannot list keys: %v", n, err)
		}
		// ...and may not write, nor read the admin-only endpoints.
		_, err := v.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
		wantStatus(t, err, 403, "writes need an admin credential")
		_, err = v.CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "admin"})
		wantStatus(t, err, 403, "admin")
		_, err = v.RotateKeys(ctx)
		wantStatus(t, err, 403, "admin")
		_, err = v.Evict(ctx, "s1")
		wantStatus(t, err, 403, "admin")
		_, err = v.Audit(ctx, 0)
		wantStatus(t, err, 403, "needs an admin credential")
		// No credential at all.
		_, err = f.ClientWith(n, "").CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
		wantStatus(t, err, 401, "needs an operator credential")
	}

	// The second admin works on every node; after revocation it is refused
	// everywhere, with a 401 that says so.
	if _, err := f.ClientWith("s1", ops.Credential).CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"}); err != nil {
		t.Fatalf("second admin: %v", err)
	}
	if _, err := admin.RevokeACLToken(ctx, ops.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range f.Names() {
		_, _, err := f.ClientWith(n, ops.Credential).Fleet(ctx)
		wantStatus(t, err, 401, "revoked")
	}
	_, err = admin.RevokeACLToken(ctx, "nosuchid")
	wantStatus(t, err, 404, "no operator credential")

	// The bootstrap credential is the last admin: revoking it would lock
	// everyone out.
	list, err := admin.ACLTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bootID string
	for _, o := range list {
		if o.Name == "bootstrap" {
			bootID = o.ID
		}
		if o.ID == ops.ID && !o.Revoked {
			t.Errorf("ops credential not listed as revoked")
		}
	}
	_, err = admin.RevokeACLToken(ctx, bootID)
	wantStatus(t, err, 409, "last admin")

	// Join token revocation.
	tok, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Join(testenv.Spec{Name: "late", Role: "sensor"}, tok.Token); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("join with a revoked token: %v", err)
	}
	_, err = admin.RevokeToken(ctx, "nosuchid")
	wantStatus(t, err, 404, "no join token")

	// The audit log, read on the edge (which asks a gateway) and on the
	// gateway, records the writes: who, what, from where, result.
	for _, n := range f.Names() {
		log, err := f.Client(n).Audit(ctx, 0)
		if err != nil {
			t.Fatalf("%s: audit: %v", n, err)
		}
		var sawViewer, sawRevoke, sawToken, sawRefused bool
		for _, e := range log {
			if e.OperatorID == "" || e.Remote == "" || e.Time.IsZero() || e.Index == 0 || e.Method == "" {
				t.Errorf("%s: incomplete audit entry %+v", n, e)
			}
			switch {
			case e.Path == "/v1/acl/tokens" && strings.Contains(e.Summary, viewer.ID) && e.Result == "ok":
				sawViewer = true
			case e.Path == "/v1/acl/tokens/"+ops.ID && e.Method == "DELETE":
				sawRevoke = true
			case e.Path == "/v1/tokens/"+tok.ID && strings.Contains(e.Summary, "revoked join token"):
				sawToken = true
			case e.Path == "/v1/acl/tokens/"+bootID && e.Result == "error":
				sawRefused = strings.Contains(e.Error, "last admin")
			}
			if e.Path == "/v1/tokens" && e.OperatorName != "bootstrap" && e.OperatorName != "ops" {
				t.Errorf("%s: token create recorded for %q", n, e.OperatorName)
			}
		}
		if !sawViewer || !sawRevoke || !sawToken || !sawRefused {
			t.Errorf("%s: audit log misses writes (viewer %v, revoke %v, token %v, refused %v): %+v", n, sawViewer, sawRevoke, sawToken, sawRefused, log)
		}
	}
}

// /metrics takes a viewer credential unless the agent opens it.
func TestMetricsCredential(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "open", Role: "sensor"}},
		Tune: func(c *node.Config) { c.MetricsOpen = c.Name == "open" }})
	ctx := context.Background()
	viewer, err := f.Client("gw1").CreateACLToken(ctx, api.ACLTokenCreateRequest{Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	get := func(n, cred string) (int, string) {
		var out string
		_, err := f.ClientWith(n, cred).Do(ctx, http.MethodGet, "/metrics", nil, nil)
		if err != nil {
			se, ok := err.(*api.StatusError)
			if !ok {
				t.Fatal(err)
			}
			return se.Code, se.Message
		}
		return 200, out
	}
	if code, msg := get("gw1", ""); code != 401 || !strings.Contains(msg, "credential") {
		t.Errorf("closed /metrics without credential: %d %s", code, msg)
	}
	if code, _ := get("gw1", viewer.Credential); code != 200 {
		t.Errorf("closed /metrics with a viewer credential: %d", code)
	}
	if code, _ := get("open", ""); code != 200 {
		t.Errorf("open /metrics without credential: %d", code)
	}
}
