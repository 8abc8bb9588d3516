package testenv_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type goPkg struct {
	ImportPath string
	Dir        string
	Name       string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []goPkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "-deps=false", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []goPkg
	for dec.More() {
		var p goPkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// Every package has exactly one package doc comment (tailscale's
// pkgdoc_test).
func TestEveryPackageHasOneDocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		docs := 0
		for _, f := range p.GoFiles {
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				docs++
			}
		}
		if docs != 1 {
			t.Errorf("%s has %d package doc comments, want 1", p.ImportPath, docs)
		}
	}
}

// Dependencies point the way the architecture says.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/fleetmesh/fleetmesh/"
	rules := []struct {
		pkg       string
		forbidden []string
		why       string
	}{
		{"hardening", []string{"github.com/docker/", mod}, "the policy engine stands alone"},
		{"node/api", []string{mod}, "the public API client imports no internal package"},
		{"mesh", []string{mod + "consensus", mod + "apps", "github.com/hashicorp/raft"}, "gossip knows nothing of Raft or apps"},
		{"consensus", []string{mod + "mesh", mod + "apps", "github.com/hashicorp/memberlist"}, "Raft knows nothing of gossip"},
		{"node/jointoken", []string{mod}, "the token format stands alone"},
	}
	pkgs := map[string]goPkg{}
	for _, p := range listPackages(t) {
		pkgs[strings.TrimPrefix(p.ImportPath, mod)] = p
	}
	for _, r := range rules {
		p, ok := pkgs[r.pkg]
		if !ok {
			continue
		}
		cmd := exec.Command("go", "list", "-deps", "./"+r.pkg)
		cmd.Dir = ".."
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == p.ImportPath {
				continue
			}
			for _, f := range r.forbidden {
				allowed := r.pkg == "mesh" && (dep == mod+"node/logwriter" || dep == mod+"node/netgate") ||
					r.pkg == "consensus" && (dep == mod+"node/logwriter" || dep == mod+"node/netgate")
				if strings.HasPrefix(dep, f) && !allowed {
					t.Errorf("%s depends on %s: %s", r.pkg, dep, r.why)
				}
			}
		}
	}
}
