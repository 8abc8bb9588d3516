package hardening

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParsePolicy feeds arbitrary bytes to ParsePolicy: it must never panic,
// every refusal must wrap ErrInvalidPolicy, and whatever it accepts must
// validate and render.
func FuzzParsePolicy(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, file := range append(seeds, bad...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", "---", "null", "[]", "{}", "apiVersion: [", "a: &a [*a]",
		"apiVersion: fleetmesh.io/v1\nkind: SecurityPolicy\nmetadata: {name: x}\nspec: {os: {sysctl: {kernel.sysrq: \"0\"}}}\n",
		"apiVersion: fleetmesh.io/v1\nkind: SecurityPolicy\nmetadata: {name: x}\nspec: {network: {firewall: {rules: [{name: a, port: 1, source: \"::/0\"}]}}}\n",
		"spec: {os: {filePermissions: {/etc/x: 0777777777777777777777}}}",
		"spec: {network: {firewall: {rules: [{port: 99999999999999999999999}]}}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error does not wrap ErrInvalidPolicy: %v", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted a policy that does not validate: %v", err)
		}
		RenderNftables(p.Spec.Network.Firewall, DefaultFleetPorts())
		RenderSysctl(p.Spec.OS.Sysctl)
		if p.Spec.OS.SSH != nil {
			RenderSSHD(p.Spec.OS.SSH)
		}
		if p.Spec.Audit != nil {
			RenderAuditRules(p.Spec.Audit.Rules)
		}
		if p.Spec.Updates != nil {
			RenderUnattendedUpgrades(p.Spec.Updates)
		}
		p.AllowPrivilegedContainers()
	})
}
