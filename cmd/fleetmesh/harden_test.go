package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/hardening"
)

const examplePolicy = "../../hardening/testdata/plant-baseline.yaml"

// smallPolicy is fully fixable on the scratch root below.
const smallPolicy = `apiVersion: fleetmesh.io/v1
kind: SecurityPolicy
metadata: {name: small}
spec:
  os:
    disableServices: [bluetooth]
    sysctl: {kernel.randomize_va_space: "2"}
    filePermissions: {/etc/shadow: "0640"}
    ssh: {permitRootLogin: "no", passwordAuthentication: "no"}
`

// scratchRoot builds a small system image with violations of smallPolicy.
func scratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/shadow":                           "root:*:19000:0:99999:7:::\n",
		"etc/ssh/sshd_config":                  "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\n",
		"etc/sysctl.d/10-vendor.conf":          "kernel.randomize_va_space = 0\n",
		"lib/systemd/system/bluetooth.service": "[Unit]\n",
	}
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wants := filepath.Join(root, "etc/systemd/system/bluetooth.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/lib/systemd/system/bluetooth.service", filepath.Join(wants, "bluetooth.service")); err != nil {
		t.Fatal(err)
	}
	return root
}

// tree records every path below root except fleetmesh's own state.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p, root)
		if strings.HasPrefix(rel, "/var") {
			return fs.SkipDir
		}
		fi, _ := os.Lstat(p)
		desc := fi.Mode().String()
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		} else if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			desc += " " + string(data)
		}
		out[rel] = desc
		return nil
	})
	return out
}

func sameTree(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	for k, v := range a {
		if b[k] != v {
			t.Errorf("%s: %s changed: %q -> %q", what, k, v, b[k])
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			t.Errorf("%s: %s appeared", what, k)
		}
	}
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runWith(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHardenCheckApplyUndo(t *testing.T) {
	root := scratchRoot(t)
	policy := writePolicy(t, smallPolicy)
	before := tree(t, root)

	code, out, errOut := runCLI(t, "harden", "check", "--policy", policy, "--root", root)
	if code != 2 {
		t.Fatalf("check of a non-compliant root: exit %d, want 2\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"RULE", "ssh:PermitRootLogin", "fail", "score "} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "Error: policy small: 5 of 5 applicable rules fail") {
		t.Errorf("check stderr: %q", errOut)
	}

	code, out, _ = runCLI(t, "harden", "check", "--policy", policy, "--root", root, "-o", "json")
	var rep hardening.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 2 || rep.Failed != 5 || rep.Passed != 0 {
		t.Fatalf("check -o json: exit %d, %+v, %v\n%s", code, rep, err, out)
	}

	code, out, errOut = runCLI(t, "harden", "apply", "--policy", policy, "--root", root, "--dry-run")
	if code != 0 || !strings.Contains(out, "would change") {
		t.Fatalf("apply --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, "dry run", before, tree(t, root))

	code, out, errOut = runCLI(t, "harden", "apply", "--policy", policy, "--root", root)
	if code != 0 || !strings.Contains(out, "score 100.0%") || !strings.Contains(out, "backup in /var/lib/fleetmesh/hardening/backup/") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	applied := tree(t, root)

	code, out, _ = runCLI(t, "harden", "apply", "--policy", policy, "--root", root)
	if code != 0 || !strings.Contains(out, "nothing to change") {
		t.Fatalf("second apply: exit %d\n%s", code, out)
	}
	sameTree(t, "second apply", applied, tree(t, root))

	if code, out, errOut = runCLI(t, "harden", "check", "--policy", policy, "--root", root); code != 0 {
		t.Fatalf("check after apply: exit %d\n%s%s", code, out, errOut)
	}

	if code, out, errOut = runCLI(t, "harden", "undo", "--root", root); code != 0 || !strings.Contains(out, "restored /etc/shadow") {
		t.Fatalf("undo: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, "undo", before, tree(t, root))

	code, _, errOut = runCLI(t, "harden", "undo", "--root", root)
	if code != 1 || !strings.Contains(errOut, "nothing to undo") {
		t.Fatalf("second undo: exit %d, stderr %q", code, errOut)
	}
}

func TestHardenExampleOnScratchRoot(t *testing.T) {
	// The full example needs fail2ban, auditd and nftables in the image;
	// this one has none, so apply fixes what it can and says what remains.
	root := scratchRoot(t)
	code, out, errOut := runCLI(t, "harden", "apply", "--policy", examplePolicy, "--root", root)
	if code != 2 || !strings.Contains(out, "cannot fix: fail2ban:sshd: install the fail2ban package") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "fail2ban:sshd") {
		t.Errorf("stderr does not name the failing rules: %q", errOut)
	}
}

func TestHardenBadInput(t *testing.T) {
	root := scratchRoot(t)
	before := tree(t, root)
	policy := writePolicy(t, smallPolicy)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no policy flag", []string{"harden", "check", "--root", root}, `required flag(s) "policy" not set`},
		{"missing policy file", []string{"harden", "apply", "--policy", "/nonexistent/p.yaml", "--root", root}, "no such file"},
		{"missing root", []string{"harden", "check", "--policy", policy, "--root", "/nonexistent/root"}, "open root /nonexistent/root"},
		{"bad output", []string{"harden", "check", "--policy", policy, "--root", root, "-o", "yaml"}, `unknown output format "yaml"`},
		{"extra argument", []string{"harden", "apply", "--policy", policy, "--root", root, "now"}, "unknown command"},
		{"unknown flag", []string{"harden", "apply", "--policy", policy, "--root", root, "--force"}, "unknown flag: --force"},
		{"undo with nothing", []string{"harden", "undo", "--root", root}, "nothing to undo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.args...)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, errOut, tc.want)
			}
		})
	}
	bad, _ := filepath.Glob("../../hardening/testdata/bad/*.yaml")
	if len(bad) < 15 {
		t.Fatalf("only %d bad policies", len(bad))
	}
	for _, file := range bad {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, _ := os.ReadFile(file)
			want := strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "# want: ")
			code, out, errOut := runCLI(t, "harden", "apply", "--policy", file, "--root", root)
			if code != 1 || !strings.Contains(errOut, want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, want)
			}
		})
	}
	sameTree(t, "bad input", before, tree(t, root))
}
