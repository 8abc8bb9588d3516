package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

const examplePath = "../../node/provision/testdata/sensor-001.yaml"

func testTokenString(t *testing.T) (string, jointoken.Token) {
	tok, err := jointoken.New("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", []string{"10.20.0.1:7400"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.String(), tok
}

func TestProvisionCLI(t *testing.T) {
	s, tok := testTokenString(t)
	out := filepath.Join(t.TempDir(), "seed")
	code, stdout, stderr := runCLI(t, "provision", "-f", examplePath, "--token", s, "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, tok.Secret) {
		t.Fatal("the token secret was printed")
	}
	if !strings.Contains(stdout, "edge-sensor-001") || !strings.Contains(stdout, tok.Redacted()) {
		t.Fatalf("output: %s", stdout)
	}
	if ud, _ := os.ReadFile(filepath.Join(out, "user-data")); !bytes.Contains(ud, []byte(s)) {
		t.Fatal("user-data lacks the token")
	}

	code, stdout, stderr = runCLI(t, "provision", "-f", examplePath, "--token", s, "--out", out+"-json", "-o", "json")
	var res struct {
		Token   string
		Devices []struct{ Hostname, Seed string }
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &res) != nil {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	if res.Token != tok.Redacted() || !strings.Contains(stdout, "<redacted>") || res.Devices[0].Hostname != "edge-sensor-001" || strings.Contains(stdout, tok.Secret) {
		t.Fatalf("json: %s", stdout)
	}
}

func TestProvisionCLIErrors(t *testing.T) {
	s, tok := testTokenString(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	data, _ := os.ReadFile(examplePath)
	os.WriteFile(bad, bytes.Replace(data, []byte("vlan: 200"), []byte("vlan: 5000"), 1), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"provision", "-f", bad, "--token", s, "--out", filepath.Join(dir, "o1")}, `network.vlan: "5000": VLAN id out of range`},
		{[]string{"provision", "-f", examplePath, "--token", strings.Replace(s, tok.Secret, tok.Secret[:10], 1), "--out", filepath.Join(dir, "o2")}, "malformed join token"},
		{[]string{"provision", "-f", examplePath, "--out", filepath.Join(dir, "o3")}, "join token is required"},
		{[]string{"provision", "-f", examplePath, "--token", s, "--out", filepath.Join(dir, "o4"), "-o", "yaml"}, `-o "yaml"`},
		{[]string{"image", "--in", bad, "--out", filepath.Join(dir, "x.img"), "-f", examplePath, "--token", s}, "built for"},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args[:1], code, stderr, c.want)
		}
		if strings.Contains(stdout+stderr, tok.Secret) {
			t.Errorf("%v: printed the secret", c.args[:1])
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed commands wrote: %v", entries)
	}
}

func TestFlashCLIToFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	os.WriteFile(img, bytes.Repeat([]byte("fleetmesh"), 100000), 0o644)
	target := filepath.Join(dir, "card")
	os.WriteFile(target, nil, 0o600)
	code, stdout, stderr := runCLI(t, "flash", img, target, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res struct {
		Bytes    int64
		Verified bool
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || !res.Verified || res.Bytes != 900000 {
		t.Fatalf("%v %+v %s", err, res, stdout)
	}
	if code, _, _ := runCLI(t, "flash", img, dir); code == 0 {
		t.Fatal("flash to a directory succeeded")
	}
}

func TestDiscoverCLI(t *testing.T) {
	dir := t.TempDir()
	neigh := filepath.Join(dir, "neigh")
	os.WriteFile(neigh, []byte("10.0.0.5 dev eth0 lladdr dc:a6:32:00:00:05 REACHABLE\n10.0.0.6 dev eth0 lladdr 00:11:22:33:44:55 REACHABLE\n10.0.0.7 dev eth0 lladdr d8:3a:dd:00:00:07 STALE\n"), 0o644)
	known := filepath.Join(dir, "known")
	os.WriteFile(known, []byte("10.0.0.7\n"), 0o644)
	code, stdout, stderr := runCLI(t, "discover", "--neigh-file", neigh, "--known", known, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var pis []struct {
		IP      string `json:"ip"`
		InFleet bool   `json:"in_fleet"`
	}
	if err := json.Unmarshal([]byte(stdout), &pis); err != nil {
		t.Fatal(err)
	}
	if len(pis) != 2 || pis[0].IP != "10.0.0.5" || pis[0].InFleet || !pis[1].InFleet {
		t.Fatalf("%+v", pis)
	}
	code, stdout, _ = runCLI(t, "discover", "--neigh-file", neigh)
	if code != 0 || !strings.Contains(stdout, "IN FLEET") || strings.Contains(stdout, "00:11:22") {
		t.Fatalf("table: %s", stdout)
	}
}
