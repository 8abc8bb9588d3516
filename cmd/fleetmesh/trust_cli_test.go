package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// The trust commands against a real fleet: acl, token revoke, keys, node
// evict, audit; no secret in any -o json output.
func TestTrustCommands(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}, {Name: "s2", Role: "sensor"}}})
	useNode(t, f, "s1")
	var jsonOut strings.Builder
	must := func(args ...string) string {
		t.Helper()
		out, stderr, code := cli(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if strings.Contains(strings.Join(args, " "), "-o json") || args[len(args)-1] == "json" {
			jsonOut.WriteString(out)
		}
		return out
	}

	cred := strings.TrimSpace(must("acl", "token", "create", "--role", "viewer", "--name", "grafana"))
	if !strings.HasPrefix(cred, "fmop:") || strings.Contains(cred, "\n") {
		t.Fatalf("acl token create printed %q, want the credential alone", cred)
	}
	var list []api.ACLToken
	if err := json.Unmarshal([]byte(must("acl", "token", "list", "-o", "json")), &list); err != nil || len(list) != 2 {
		t.Fatalf("acl token list: %v %+v", err, list)
	}
	var viewerID string
	for _, o := range list {
		if o.Name == "grafana" && o.Role == "viewer" {
			viewerID = o.ID
		}
	}
	if out := must("acl", "token", "list"); !strings.Contains(out, "grafana") || !strings.Contains(out, "ROLE") {
		t.Fatalf("acl token list table: %q", out)
	}
	// The viewer reads but may not write.
	if _, stderr, code := cli(t, "token", "create", "--role", "sensor", "--token", cred); code == 0 || !strings.Contains(stderr, "403") {
		t.Fatalf("viewer write: %d %q", code, stderr)
	}
	must("status", "--token", cred)
	must("acl", "token", "revoke", viewerID)
	if _, stderr, code := cli(t, "status", "--token", cred); code == 0 || !strings.Contains(stderr, "revoked") {
		t.Fatalf("revoked credential: %d %q", code, stderr)
	}

	tok := strings.TrimSpace(must("token", "create", "--role", "sensor"))
	parsed, err := jointoken.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	must("token", "revoke", parsed.ID)
	if out := must("token", "list"); !strings.Contains(out, "revoked") {
		t.Fatalf("token list after revoke: %q", out)
	}

	must("keys", "rotate")
	testenv.Eventually(t, 30*time.Second, func() error {
		var ks api.Keys
		if err := json.Unmarshal([]byte(must("keys", "list", "-o", "json")), &ks); err != nil {
			return err
		}
		if ks.Rotating || len(ks.Keys) != 1 || ks.Keys[0].Nodes != 3 {
			return errorString("rotation not done")
		}
		return nil
	})
	if out := must("keys", "list"); !strings.Contains(out, "FINGERPRINT") {
		t.Fatalf("keys list: %q", out)
	}

	if out := must("node", "evict", "s2"); !strings.Contains(out, "s2 evicted") {
		t.Fatalf("node evict: %q", out)
	}
	if _, stderr, code := cli(t, "node", "evict", "s2"); code == 0 || !strings.Contains(stderr, "already evicted") {
		t.Fatalf("second evict: %d %q", code, stderr)
	}

	var log []api.AuditEntry
	if err := json.Unmarshal([]byte(must("audit", "-o", "json")), &log); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range log {
		paths = append(paths, e.Method+" "+e.Path)
	}
	for _, want := range []string{"POST /v1/acl/tokens", "DELETE /v1/acl/tokens/" + viewerID, "DELETE /v1/tokens/" + parsed.ID, "POST /v1/keys/rotate", "DELETE /v1/nodes/s2"} {
		if !strings.Contains(strings.Join(paths, "\n"), want) {
			t.Errorf("audit log lacks %q: %v", want, paths)
		}
	}
	if out := must("audit", "--limit", "2"); strings.Count(out, "\n") != 3 {
		t.Errorf("audit --limit 2: %q", out)
	}

	// No secret in any -o json output.
	for _, s := range []string{f.Admin, strings.SplitN(f.Admin, ".", 2)[1], cred, strings.SplitN(cred, ".", 2)[1], parsed.Secret} {
		if strings.Contains(jsonOut.String(), s) {
			t.Errorf("a secret appears in -o json output")
		}
	}
}

func TestTrustCommandsBadInput(t *testing.T) {
	t.Setenv("FLEETMESH_ADDR", "127.0.0.1:1")
	t.Setenv("FLEETMESH_TOKEN", "")
	t.Setenv("FLEETMESH_CACERT", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"acl", "token", "create", "--role", "root"}, "admin or viewer"},
		{[]string{"acl", "token", "create", "--role", "viewer"}, "FLEETMESH_CACERT"},
		{[]string{"acl", "token", "revoke"}, "accepts 1 arg"},
		{[]string{"token", "revoke"}, "accepts 1 arg"},
		{[]string{"node", "evict"}, "accepts 1 arg"},
		{[]string{"keys", "rotate", "--ca-cert", "/nonexistent/ca.pem"}, "--ca-cert"},
		{[]string{"audit", "--limit", "0"}, "--limit"},
	} {
		_, stderr, code := cli(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want it to mention %q", c.args, code, stderr, c.want)
		}
	}
}
