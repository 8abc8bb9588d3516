package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// seedRoot writes a few violations into a node's scratch root.
func seedRoot(t *testing.T, root string) {
	t.Helper()
	files := map[string]string{
		"etc/ssh/sshd_config": "PermitRootLogin yes\nPasswordAuthentication yes\n",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/bash\n",
		"etc/shadow":          "root:*:19000:0:99999:7:::\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// 6.3. Every node checks itself against the fleet policy and gossips its
// score and failing rules; any node shows them; roles listed apply it.
func TestPolicyComplianceThroughGossip(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}, {Name: "c1", Role: "compute"}}})
	for _, n := range f.Names() {
		seedRoot(t, f.Member(n).Root())
	}
	policy, err := os.ReadFile("../hardening/testdata/plant-baseline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Bad policies are refused and nothing is stored.
	_, err = f.Client("s1").SetPolicy(ctx, []byte(strings.Replace(string(policy), "10.0.0.0/8", "10.0.0.0/33", 1)), nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, "spec.network.firewall.rules[0].source") {
		t.Fatalf("bad policy: %v", err)
	}
	if _, err := f.Client("s1").SetPolicy(ctx, policy, []string{"compute", "bogus"}); err == nil {
		t.Fatal("an unknown role was accepted")
	}
	if _, err := f.Client("s1").Policy(ctx); err == nil {
		t.Fatal("a refused policy was stored")
	}

	if _, err := f.Client("s1").SetPolicy(ctx, policy, []string{"compute"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, observer := range f.Names() {
			st, err := f.Client(observer).Policy(ctx)
			if err != nil {
				return err
			}
			byNode := map[string]api.Compliance{}
			for _, c := range st.Nodes {
				byNode[c.Node] = c
			}
			for _, n := range f.Names() {
				if !byNode[n].Reported {
					return fmt.Errorf("%s has no report from %s", observer, n)
				}
			}
			s1, c1 := byNode["s1"], byNode["c1"]
			if !slices.Contains(s1.Failing, "ssh:PermitRootLogin") {
				return fmt.Errorf("%s: s1 failing %v, want ssh:PermitRootLogin", observer, s1.Failing)
			}
			if slices.Contains(c1.Failing, "ssh:PermitRootLogin") || c1.Score <= s1.Score {
				return fmt.Errorf("%s: c1 (applies the policy) has score %.1f failing %v; s1 %.1f", observer, c1.Score, c1.Failing, s1.Score)
			}
			fv, _, err := f.FleetView(observer)
			if err != nil {
				return err
			}
			if !slices.Contains(fv.NonCompliant, "s1") {
				return fmt.Errorf("%s: non-compliant %v", observer, fv.NonCompliant)
			}
		}
		return nil
	})
	// The sensor only checked: its root is untouched.
	b, _ := os.ReadFile(filepath.Join(f.Member("s1").Root(), "etc/ssh/sshd_config"))
	if !strings.Contains(string(b), "PermitRootLogin yes") {
		t.Error("a check-only node changed its files")
	}
}

// Privileged containers are refused unless the fleet policy allows them.
func TestPrivilegedNeedsPolicy(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	ctx := context.Background()
	m := []byte("apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: probe, version: \"1\"}\nspec:\n  selector: {nodes: [nowhere]}\n  deployment: {type: container, image: x/y:1, privileged: true}\n")
	_, err := f.Client("gw1").DeployApp(ctx, m)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, "privileged") {
		t.Fatalf("privileged without a policy: %v", err)
	}
	policy, _ := os.ReadFile("../hardening/testdata/plant-baseline.yaml")
	allow := strings.Replace(string(policy), "allowPrivileged: false", "allowPrivileged: true", 1)
	if _, err := f.Client("gw1").SetPolicy(ctx, []byte(allow), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Client("gw1").DeployApp(ctx, m); err != nil {
		t.Fatalf("privileged with a policy that allows it: %v", err)
	}
}
