package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/testenv"
	"github.com/spf13/cobra"
)

func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runWith(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestBadFlagsAndInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--data-dir", dir, "--role", "toaster"}, "role"},
		{[]string{"agent", "--data-dir", dir, "--bootstrap", "--join", "fm1:x"}, "choose one"},
		{[]string{"agent", "--data-dir", dir, "--bind", "nonsense"}, "bind"},
		{[]string{"agent", "--data-dir", dir, "--name", "Bad_Name"}, "name"},
		{[]string{"agent", "--data-dir", dir, "--label", "novalue"}, "--label"},
		{[]string{"agent", "--data-dir", dir}, "--bootstrap"},
		{[]string{"agent", "--data-dir", dir, "--join", "not-a-token", "--role", "sensor"}, "malformed join token"},
		{[]string{"agent", "--data-dir", dir, "--join", "fm1:x", "--role", "sensor", "--join-timeout", "-1s"}, "join-timeout"},
		{[]string{"agent", "--data-dir", dir, "--join-timeout", "soon"}, "--join-timeout"},
		{[]string{"agent", "--data-dir", dir, "--no-such-flag"}, "unknown flag"},
		{[]string{"agent", "--config", filepath.Join(dir, "missing.yaml")}, "--config"},
		{[]string{"status"}, "FLEETMESH_ADDR"},
		{[]string{"status", "--addr", "127.0.0.1:1", "-o", "yaml"}, "--output"},
		{[]string{"token", "create", "--addr", "127.0.0.1:1"}, "--role"},
		{[]string{"token", "create", "--role", "sensor", "--ttl", "soon", "--addr", "127.0.0.1:1"}, "--ttl"},
		{[]string{"token", "create", "--role", "sensor", "--addr", "127.0.0.1:1"}, "FLEETMESH_CACERT"},
		{[]string{"nodes", "show"}, "accepts 1 arg"},
	}
	t.Setenv("FLEETMESH_ADDR", "")
	t.Setenv("FLEETMESH_TOKEN", "")
	t.Setenv("FLEETMESH_CACERT", "")
	for _, c := range cases {
		_, stderr, code := cli(t, c.args...)
		if code == 0 {
			t.Errorf("%v: exit 0, want failure", c.args)
			continue
		}
		if !strings.Contains(stderr, c.want) {
			t.Errorf("%v: stderr %q does not mention %q", c.args, stderr, c.want)
		}
	}
	// Nothing was left half-made in the data dir.
	for _, f := range []string{"node.json", "cert.pem", "key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("a failed start left %s behind", f)
		}
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+dir+"\nrole: sensor\nflavour: mint\n"), 0o600)
	_, stderr, code := cli(t, "agent", "--config", cfg)
	if code == 0 || !strings.Contains(stderr, "flavour") {
		t.Fatalf("exit %d, stderr %q: want an error naming the unknown key", code, stderr)
	}
}

// A join no fleet address answers is retried until --join-timeout (here
// from the config file), then the agent exits non-zero saying why, with no
// membership left in the data dir and the secret in no output.
func TestAgentJoinGivesUp(t *testing.T) {
	dir := t.TempDir()
	tok, err := jointoken.New(strings.Repeat("A", 43), []string{"127.0.0.1:1"}) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "agent.yaml")
	args := []string{"agent", "--config", file, "--data-dir", dir, "--role", "sensor", "--join", tok.String(), "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0"}

	os.WriteFile(file, []byte("join_timeout: soon\n"), 0o600)
	if _, stderr, code := cli(t, args...); code == 0 || !strings.Contains(stderr, "join_timeout") {
		t.Errorf("join_timeout: soon: exit %d, stderr %q: want an error naming join_timeout", code, stderr)
	}

	os.WriteFile(file, []byte("join_timeout: 2s\n"), 0o600)
	stdout, stderr, code := cli(t, args...)
	if code == 0 || !strings.Contains(stderr, "gave up") || !strings.Contains(stderr, "127.0.0.1:1 unreachable") {
		t.Errorf("exit %d, stderr %q: want a non-zero exit that gives up naming the unreachable address", code, stderr)
	}
	if strings.Contains(stdout+stderr, tok.Secret) {
		t.Error("the token secret appears in the output")
	}
	if _, err := os.Stat(filepath.Join(dir, "node.json")); err == nil {
		t.Error("a join that gave up left node.json (a membership) behind")
	}
}

func TestUnreadableDataDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plainfile")
	os.WriteFile(file, []byte("x"), 0o600)
	_, stderr, code := cli(t, "agent", "--data-dir", file, "--bootstrap", "--role", "gateway")
	if code == 0 || !strings.Contains(stderr, "data dir") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

// Operator commands against a real fleet: tables, -o json, and the token
// printed alone on stdout.
func TestOperatorCommands(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	useNode(t, f, "s1")

	out, stderr, code := cli(t, "token", "create", "--role", "sensor", "--ttl", "2h", "--uses", "3")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("token create printed %d lines, want the token alone", len(lines))
	}
	tok, err := jointoken.Parse(lines[0])
	if err != nil {
		t.Fatalf("printed token does not parse: %v", err)
	}

	out, _, code = cli(t, "token", "list", "-o", "json")
	var toks []api.TokenInfo
	if code != 0 || json.Unmarshal([]byte(out), &toks) != nil {
		t.Fatalf("token list -o json: %d %q", code, out)
	}
	found := false
	for _, tk := range toks {
		if tk.ID == tok.ID {
			found = tk.UsesLeft == 3 && tk.Role == "sensor"
		}
	}
	if !found || strings.Contains(out, tok.Secret) {
		t.Fatalf("token list: new token missing, wrong, or its secret shown: %s", out)
	}

	out, _, code = cli(t, "status")
	if code != 0 || !strings.Contains(out, "2 total, 2 online") {
		t.Fatalf("status: %d %q", code, out)
	}
	out, _, code = cli(t, "status", "-o", "json")
	var fv api.Fleet
	if code != 0 || json.Unmarshal([]byte(out), &fv) != nil || fv.Online != 2 {
		t.Fatalf("status -o json: %d %q", code, out)
	}
	out, _, code = cli(t, "nodes")
	if code != 0 || !strings.Contains(out, "gw1") || !strings.Contains(out, "s1") || !strings.Contains(out, "NAME") {
		t.Fatalf("nodes: %d %q", code, out)
	}
	out, _, code = cli(t, "nodes", "show", "gw1", "-o", "json")
	var nv api.Node
	if code != 0 || json.Unmarshal([]byte(out), &nv) != nil || nv.Name != "gw1" || nv.Role != "gateway" {
		t.Fatalf("nodes show -o json: %d %q", code, out)
	}
	_, stderr, code = cli(t, "nodes", "show", "nope")
	if code == 0 || !strings.Contains(stderr, "no node named") {
		t.Fatalf("nodes show nope: %d %q", code, stderr)
	}
	_, stderr, code = cli(t, "status", "--token", "fmop:wrong.credential")
	if code == 0 || !strings.Contains(stderr, "401") {
		t.Fatalf("bad credential: %d %q", code, stderr)
	}
}

// A second agent on the same data dir is refused and corrupts nothing.
func TestSecondAgentSameDataDir(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	dir := f.Member("gw1").DataDir
	before, _ := os.ReadFile(filepath.Join(dir, "node.json"))
	_, stderr, code := cli(t, "agent", "--data-dir", dir, "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0", "--raft", "127.0.0.1:0")
	if code == 0 || !strings.Contains(stderr, "another fleetmesh agent") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "node.json"))
	if !bytes.Equal(before, after) {
		t.Fatal("node.json changed")
	}
	if _, err := f.Client("gw1").Health(context.Background()); err != nil {
		t.Fatalf("the running agent was disturbed: %v", err)
	}
}

// The agent command bootstraps, prints where the credential is, and leaves
// cleanly when its context ends.
func TestAgentBootstrapCommand(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuf
	done := make(chan int)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"agent", "--data-dir", dir, "--bootstrap", "--role", "gateway", "--name", "solo",
			"--bind", "127.0.0.1:0", "--api", "127.0.0.1:0", "--raft", "127.0.0.1:0"})
		root.SetOut(&out)
		root.SetErr(&errb)
		if err := root.ExecuteContext(ctx); err != nil {
			done <- 1
			return
		}
		done <- 0
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(out.String(), "operator.token") {
			return errorString("agent has not reported its credential yet: " + out.String() + errb.String())
		}
		return nil
	})
	st, err := os.Stat(filepath.Join(dir, "operator.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("operator.token: %v mode %v", err, st.Mode())
	}
	cred, _ := os.ReadFile(filepath.Join(dir, "operator.token"))
	if strings.Contains(out.String()+errb.String(), strings.TrimSpace(string(cred))) {
		t.Fatal("the agent printed the operator credential")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("agent exit %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop")
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestAppsCommands(t *testing.T) {
	if err := testenv.BuildHealthImage(); err != nil {
		if os.Getenv("FLEETMESH_REQUIRE_DOCKER") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	useNode(t, f, "gw1")
	manifest := filepath.Join(t.TempDir(), "app.yaml")
	os.WriteFile(manifest, []byte("apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: echo, version: \"1\"}\nspec:\n  selector: {role: sensor}\n  deployment: {type: container, image: "+testenv.HealthImageV1+"}\n"), 0o600)

	out, stderr, code := cli(t, "apps", "deploy", "-f", manifest)
	if code != 0 || !strings.Contains(out, "deployed echo 1") {
		t.Fatalf("deploy: %d %q %q", code, out, stderr)
	}
	testenv.Eventually(t, 60*time.Second, func() error {
		out, _, code := cli(t, "apps", "show", "echo", "-o", "json")
		var d api.AppDetail
		if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
			return errorString("apps show failed: " + out)
		}
		if len(d.Nodes) != 1 || d.Nodes[0].Node != "s1" || d.Nodes[0].Status != "running" {
			return errorString("echo not running on s1 yet: " + out)
		}
		return nil
	})
	out, _, code = cli(t, "apps", "ls")
	if code != 0 || !strings.Contains(out, "echo") || !strings.Contains(out, "role=sensor") || !strings.Contains(out, "running 1") {
		t.Fatalf("apps ls: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: echo, version: \"2\"}\nspec:\n  deployment: {type: container, image: x, ports: [\"80:x\"]}\n"), 0o600)
	_, stderr, code = cli(t, "apps", "deploy", "-f", bad)
	if code == 0 || !strings.Contains(stderr, "spec.deployment.ports[0]") {
		t.Fatalf("bad manifest: %d %q", code, stderr)
	}
	out, _, code = cli(t, "apps", "template", "mosquitto")
	if code != 0 || !strings.Contains(out, "kind: EdgeApplication") {
		t.Fatalf("template: %d %q", code, out)
	}
	out, _, code = cli(t, "apps", "rm", "echo")
	if code != 0 || !strings.Contains(out, "removed echo") {
		t.Fatalf("rm: %d %q", code, out)
	}
	_, stderr, code = cli(t, "apps", "show", "echo")
	if code == 0 || !strings.Contains(stderr, "no application") {
		t.Fatalf("show after rm: %d %q", code, stderr)
	}
}

// Provisioning through a running fleet pre-registers the device: it shows
// as provisioning until it joins, then as a member.
func TestProvisionRegistersExpectedDevice(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	useNode(t, f, "gw1")
	tok := f.NewToken("sensor", 0)
	out := filepath.Join(t.TempDir(), "seed")
	stdout, stderr, code := cli(t, "provision", "-f", "../../node/provision/testdata/sensor-001.yaml", "--token", tok, "--out", out, "--register")
	if code != 0 {
		t.Fatalf("provision --register: %d %s %s", code, stdout, stderr)
	}
	ctx := context.Background()
	v, _, err := f.Client("gw1").Node(ctx, "edge-sensor-001")
	if err != nil || v.State != "provisioning" {
		t.Fatalf("pre-registered device: %+v %v", v, err)
	}
	fv, _, _ := f.FleetView("gw1")
	found := false
	for _, a := range fv.Alerts {
		found = found || strings.Contains(a, "edge-sensor-001 was provisioned but has not joined")
	}
	if !found || fv.ByState["provisioning"] != 1 {
		t.Fatalf("fleet view does not show the expected device: %+v", fv)
	}
	if _, err := f.Join(testenv.Spec{Name: "edge-sensor-001", Role: "sensor", Site: "plant-a"}, tok); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		v, _, err := f.Client("gw1").Node(ctx, "edge-sensor-001")
		if err != nil {
			return err
		}
		if v.State != "ready" {
			return errorString("edge-sensor-001 is " + v.State)
		}
		return nil
	})
}

// discover --fleet marks the Pis whose address a fleet member uses.
func TestDiscoverMarksFleetMembers(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	useNode(t, f, "gw1")
	member := f.Member("gw1").IP
	neigh := filepath.Join(t.TempDir(), "neigh")
	os.WriteFile(neigh, []byte(member+" dev eth0 lladdr dc:a6:32:00:00:05 REACHABLE\n192.0.2.9 dev eth0 lladdr 2c:cf:67:00:00:09 REACHABLE\n"), 0o644)
	out, stderr, code := cli(t, "discover", "--neigh-file", neigh, "--fleet", "-o", "json")
	if code != 0 {
		t.Fatalf("%d %s", code, stderr)
	}
	var pis []struct {
		IP      string `json:"ip"`
		InFleet bool   `json:"in_fleet"`
	}
	if err := json.Unmarshal([]byte(out), &pis); err != nil {
		t.Fatal(err)
	}
	in := map[string]bool{}
	for _, p := range pis {
		in[p.IP] = p.InFleet
	}
	if len(pis) != 2 || !in[member] || in["192.0.2.9"] {
		t.Fatalf("%+v", pis)
	}
}

// useNode points the CLI's environment at a node of f with the admin
// credential, as an operator would.
func useNode(t *testing.T, f *testenv.Fleet, name string) {
	t.Helper()
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caPath, f.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLEETMESH_ADDR", f.Member(name).Node.APIAddr())
	t.Setenv("FLEETMESH_TOKEN", f.Admin)
	t.Setenv("FLEETMESH_CACERT", caPath)
}

// The config file's timings section reaches the node; a bad value is
// refused with the key it is under, before anything starts.
func TestConfigFileTimings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	write := func(timings string) {
		os.WriteFile(file, []byte("data_dir: "+dir+"\nrole: sensor\ntimings:\n"+timings), 0o600)
	}
	write("  probe_interval: 100ms\n  probe_timeout: 40ms\n  suspicion_mult: 4\n  suspicion_floor: 2s\n  raft_heartbeat_timeout: 1s\n  raft_leader_lease_timeout: 500ms\n")
	cfg, err := configFromFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mesh.ProbeInterval != 100*time.Millisecond || cfg.Mesh.ProbeTimeout != 40*time.Millisecond || cfg.Mesh.SuspicionMult != 4 ||
		cfg.Mesh.SuspicionFloor != 2*time.Second || cfg.Raft.HeartbeatTimeout != time.Second || cfg.Raft.LeaderLeaseTimeout != 500*time.Millisecond {
		t.Fatalf("timings not applied: mesh %+v, raft %+v", cfg.Mesh, cfg.Raft)
	}
	for _, c := range []struct{ timings, want string }{
		{"  probe_interval: soon\n", "timings.probe_interval"},
		{"  probe_timeout: 200ms\n", "timings.probe_timeout"},
		{"  raft_leader_lease_timeout: 1s\n", "timings.raft_leader_lease_timeout"},
		{"  suspicion_mult: 0\n", "timings.suspicion_mult"},
		{"  suspicion_floor: -1s\n", "timings.suspicion_floor"},
		{"  probe_intervall: 1s\n", "probe_intervall"},
	} {
		write(c.timings)
		_, stderr, code := cli(t, "agent", "--config", file)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("timings %q: exit %d, stderr %q: want an error naming %s", c.timings, code, stderr, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "node.json")); err == nil {
			t.Fatalf("timings %q: a refused config left node.json behind", c.timings)
		}
	}
}

// The README's timings example is a valid config, and the one
// BenchmarkLossyLinks measured (loosened).
func TestREADMETimingsExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```yaml\ntimings:")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README has no ```yaml block starting with timings:")
	}
	parse := func(yaml string) node.Config {
		t.Helper()
		dir := t.TempDir()
		file := filepath.Join(dir, "agent.yaml")
		os.WriteFile(file, []byte("data_dir: "+dir+"\nrole: sensor\n"+yaml), 0o600)
		cfg, err := configFromFile(file)
		if err != nil {
			t.Fatalf("%v\n%s", err, yaml)
		}
		return cfg
	}
	got, want := parse("timings:"+block), parse(loosened)
	if !reflect.DeepEqual(got.Mesh, want.Mesh) || !reflect.DeepEqual(got.Raft, want.Raft) {
		t.Errorf("README's timings: mesh %+v raft %+v; BenchmarkLossyLinks measured mesh %+v raft %+v", got.Mesh, got.Raft, want.Mesh, want.Raft)
	}
}

// configFromFile is the agent's config as `fleetmesh agent --config file`
// makes it.
func configFromFile(file string) (node.Config, error) {
	var fl agentFlags
	cmd := &cobra.Command{}
	addAgentFlags(cmd, &fl)
	if err := cmd.ParseFlags([]string{"--config", file}); err != nil {
		return node.Config{}, err
	}
	cfg, _, err := agentConfig(cmd, &fl)
	return cfg, err
}
