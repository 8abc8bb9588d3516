package hardening

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExamplePolicyAccepted(t *testing.T) {
	p := loadExample(t)
	if p.Metadata.Name != "plant-baseline" || len(p.Spec.Network.Firewall.Rules) != 3 ||
		p.Spec.OS.Sysctl["kernel.randomize_va_space"] != "2" || p.Spec.OS.FilePermissions["/etc/shadow"] != "0640" ||
		p.Spec.Intrusion.Fail2ban.SSHD.Maxretry != 5 || p.Spec.Updates.RebootTime != "03:00" || len(p.Spec.Audit.Rules) != 3 {
		t.Fatalf("example decoded wrongly: %+v", p)
	}
	if p.AllowPrivilegedContainers() {
		t.Error("allowPrivileged: false, but AllowPrivilegedContainers() is true")
	}
}

func TestAllowPrivilegedContainers(t *testing.T) {
	var nilPolicy *Policy
	if !nilPolicy.AllowPrivilegedContainers() {
		t.Error("a nil policy restricts privileged containers")
	}
	yes := true
	p := &Policy{}
	if !p.AllowPrivilegedContainers() {
		t.Error("an unset field restricts privileged containers")
	}
	p.Spec.Containers.AllowPrivileged = &yes
	if !p.AllowPrivilegedContainers() {
		t.Error("allowPrivileged: true is not obeyed")
	}
}

// badPolicies reads testdata/bad: each file starts with "# want: TEXT",
// the text its error must contain.
func badPolicies(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) < 15 {
		t.Fatalf("want at least 15 bad policies, have %d (%v)", len(files), err)
	}
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(bytes.NewReader(data)).ReadString('\n')
		want, ok := strings.CutPrefix(strings.TrimSpace(line), "# want: ")
		if !ok {
			t.Fatalf("%s: first line must be \"# want: ...\"", f)
		}
		out[f] = want
	}
	return out
}

func TestBadPoliciesRefused(t *testing.T) {
	root := writeRoot(t, realisticRoot)
	before := snapshot(t, root)
	for file, want := range badPolicies(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := LoadPolicy(file)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("error does not wrap ErrInvalidPolicy: %v", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\ndoes not contain %q", err, want)
			}
		})
	}
	// A policy that decodes but does not validate never reaches the disk.
	p := loadExample(t)
	p.Spec.Network.Firewall.Rules[0].Source = "10.0.0.0/33"
	if _, err := Apply(context.Background(), p, root, false, Options{}); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("Apply of an invalid policy: %v", err)
	}
	if _, err := Check(context.Background(), p, root, Options{}); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("Check of an invalid policy: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("refused policies changed the root: %v", d)
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	_, err := ParsePolicy([]byte(`apiVersion: fleetmesh.io/v1
kind: SecurityPolicy
metadata: {name: x}
spec:
  network:
    firewall:
      rules:
        - {name: a, port: 0, protocol: sctp, source: nope}
`))
	var pe *PolicyError
	if !errors.As(err, &pe) || len(pe.Fields) != 3 {
		t.Fatalf("want 3 field errors, got %v", err)
	}
	for i, want := range []string{"rules[0].port", "rules[0].protocol", "rules[0].source"} {
		if !strings.HasSuffix(pe.Fields[i].Path, want) {
			t.Errorf("field %d: %s, want …%s", i, pe.Fields[i].Path, want)
		}
	}
}

func TestSysctlKeysWithInterfaces(t *testing.T) {
	for key, ok := range map[string]bool{
		"net.ipv4.conf.eth0.rp_filter":     true,
		"net.ipv6.conf.wlan0.accept_ra":    true,
		"net.ipv4.conf.all.rp_filter":      true,
		"net.ipv4.conf.e/th0.rp_filter":    false,
		"net.ipv4.conf.eth0.no_such_knob":  false,
		"kernel.modules_disabled.whatever": false,
	} {
		if _, got := lookupSysctl(key); got != ok {
			t.Errorf("lookupSysctl(%q) = %v, want %v", key, got, ok)
		}
	}
}
