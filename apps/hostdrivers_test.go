package apps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// fakeRunner records the commands a driver runs instead of running them
// (snapd, systemd as PID 1 and kubectl are not available to the tests) and
// answers from respond.
type fakeRunner struct {
	mu      sync.Mutex
	calls   []string
	files   map[string]string // content of files passed to kubectl apply --filename
	respond func(cmd []string) ([]byte, error)
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	cmd := append([]string{name}, args...)
	f.mu.Lock()
	f.calls = append(f.calls, strings.Join(cmd, " "))
	if i := slices.Index(args, "--filename"); i >= 0 && i+1 < len(args) {
		data, _ := os.ReadFile(args[i+1])
		if f.files == nil {
			f.files = map[string]string{}
		}
		f.files[args[i+1]] = string(data)
	}
	respond := f.respond
	f.mu.Unlock()
	if respond == nil {
		return nil, nil
	}
	return respond(cmd)
}

// take returns and clears the recorded calls.
func (f *fakeRunner) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

type fakeExit int

func (e fakeExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e fakeExit) ExitCode() int { return int(e) }

func resolveYAML(t *testing.T, doc string) Instance {
	t.Helper()
	m, err := ParseAndValidate([]byte(doc), ValidateOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	inst, err := Resolve(m, NodeInfo{Name: "c1", Role: "compute", Site: "plant-a"})
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func systemdApp(t *testing.T, version string) Instance {
	return resolveYAML(t, `apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: logger, version: "`+version+`"}
spec:
  deployment:
    type: systemd
    command: [/bin/sh, -c, 'echo "100% $HOME" \ done; sleep 1000']
    args: ["two words", "", "tab	here"]
    env:
      - {name: GREETING, value: "hello \"world\" 50%"}
      - name: DEVICE
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
    resources:
      requests: {memory: 16Mi, cpu: 100m}
      limits: {memory: 128Mi, cpu: 1500m}
    restartPolicy: on-failure
    healthCheck:
      exec: {command: [/bin/true]}
`)
}

func TestSystemdUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	for _, inst := range []Instance{
		systemdApp(t, "1.0.0"),
		resolveYAML(t, "apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: k3s, version: v1.30.0+k3s1}\nspec:\n  deployment: {type: systemd, command: [/bin/sleep, infinity], restartPolicy: always}\n"),
	} {
		path := filepath.Join(dir, "fleetmesh-"+inst.App+".service")
		unit := RenderUnit(inst, "node-1%x")
		if err := os.WriteFile(path, unit, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
		// verify warns about the host's own units it loads as
		// dependencies; only lines naming our file count.
		var ours []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, filepath.Base(path)) {
				ours = append(ours, l)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s\nunit:\n%s", path, err, out, unit)
		}
	}
	unit := string(RenderUnit(systemdApp(t, "1.0.0"), "c1"))
	for _, want := range []string{
		`ExecStart=/bin/sh -c "echo \"100%% $$HOME\" \\ done; sleep 1000" "two words" "" "tab\there"`,
		`Environment="GREETING=hello \"world\" 50%%"`,
		"Environment=DEVICE=c1",
		"Restart=on-failure", "MemoryMax=134217728", "MemoryLow=16777216", "CPUQuota=150%", "CPUWeight=10",
		"X-Fleetmesh-Managed=true", "X-Fleetmesh-Node=c1", "X-Fleetmesh-App=logger",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
}

func TestSystemdDriverLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	active := map[string]bool{}
	run := &fakeRunner{}
	run.respond = func(cmd []string) ([]byte, error) {
		if cmd[0] != "systemctl" {
			return nil, nil
		}
		unit := cmd[len(cmd)-1]
		switch {
		case cmd[1] == "is-active" && active[unit]:
			return []byte("active\n"), nil
		case cmd[1] == "is-active":
			return []byte("inactive\n"), fakeExit(3)
		case cmd[1] == "enable" && cmd[2] == "--now", cmd[1] == "restart", cmd[1] == "start":
			active[unit] = true
		case cmd[1] == "disable":
			active[unit] = false
		}
		return nil, nil
	}
	d, err := NewSystemdDriver(SystemdConfig{UnitDir: dir, Runner: run, Node: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	unit := "fleetmesh-logger.service"
	v1 := systemdApp(t, "1")

	st, err := d.Ensure(ctx, v1, nil)
	if err != nil || st.State != StateRunning {
		t.Fatalf("install: %v %+v", err, st)
	}
	wantCalls(t, run.take(), "systemctl daemon-reload", "systemctl enable --now "+unit, "systemctl is-active "+unit)

	if st, _ := d.Ensure(ctx, v1, nil); st.State != StateRunning {
		t.Errorf("unchanged: %+v", st)
	}
	wantCalls(t, run.take(), "systemctl is-active "+unit)

	active[unit] = false // stopped by hand; restartPolicy on-failure leaves it
	if st, _ := d.Ensure(ctx, v1, nil); st.State != StateFailed || !strings.Contains(st.Message, "inactive") {
		t.Errorf("stopped unit: %+v", st)
	}
	run.take()

	v2 := systemdApp(t, "2")
	if st, err := d.Ensure(ctx, v2, nil); err != nil || st.State != StateRunning {
		t.Fatalf("replace: %v %+v", err, st)
	}
	wantCalls(t, run.take(), "systemctl daemon-reload", "systemctl enable "+unit, "systemctl restart "+unit, "systemctl is-active "+unit)

	// A unit fleetmesh did not write, and one of another node, are
	// neither listed nor touched.
	foreign := "[Unit]\nDescription=hand made\n[Service]\nExecStart=/bin/true\n"
	os.WriteFile(filepath.Join(dir, "fleetmesh-handmade.service"), []byte(foreign), 0o644)
	os.WriteFile(filepath.Join(dir, "fleetmesh-other.service"), RenderUnit(systemdApp(t, "1"), "c2"), 0o644)
	obs, err := d.List(ctx)
	if err != nil || len(obs) != 1 || obs[0].App != "logger" || obs[0].Version != "2" || obs[0].Hash != v2.Hash {
		t.Errorf("List = %+v, %v", obs, err)
	}
	hand := v1
	hand.App = "handmade"
	if _, err := d.Ensure(ctx, hand, nil); !errors.Is(err, ErrNotOwned) {
		t.Errorf("Ensure over a foreign unit: %v", err)
	}
	if err := d.Remove(ctx, "handmade"); !errors.Is(err, ErrNotOwned) {
		t.Errorf("Remove of a foreign unit: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "fleetmesh-handmade.service")); string(data) != foreign {
		t.Error("foreign unit was changed")
	}
	run.take()

	if err := d.Remove(ctx, "logger"); err != nil {
		t.Fatal(err)
	}
	wantCalls(t, run.take(), "systemctl disable --now "+unit, "systemctl daemon-reload")
	if _, err := os.Stat(filepath.Join(dir, unit)); !os.IsNotExist(err) {
		t.Errorf("unit file left: %v", err)
	}

	if code, err := d.Exec(ctx, "logger", []string{"/bin/true"}); code != 0 || err != nil {
		t.Errorf("Exec = %d, %v", code, err)
	}
}

func wantCalls(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("commands:\n  got  %q\n  want %q", got, want)
	}
}

func snapApp(t *testing.T, snap, channel string) Instance {
	ch := ""
	if channel != "" {
		ch = ", channel: " + channel
	}
	return resolveYAML(t, "apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: broker, version: \"2.0\"}\nspec:\n  deployment: {type: snap, image: "+snap+ch+"}\n")
}

func TestSnapDriver(t *testing.T) {
	ctx := context.Background()
	installed := map[string]bool{"node-red": true} // there before fleetmesh
	run := &fakeRunner{}
	run.respond = func(cmd []string) ([]byte, error) {
		switch cmd[1] {
		case "list":
			if !installed[cmd[2]] {
				return []byte("error: no matching snaps installed"), fakeExit(1)
			}
		case "install":
			installed[cmd[2]] = true
		case "remove":
			installed[cmd[2]] = false
		}
		return nil, nil
	}
	d, err := NewSnapDriver(SnapConfig{StateFile: filepath.Join(t.TempDir(), "snaps.json"), Runner: run})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := d.Ensure(ctx, snapApp(t, "mosquitto", "2.0/stable"), nil); err != nil || st.State != StateRunning {
		t.Fatalf("install: %+v %v", st, err)
	}
	wantCalls(t, run.take(), "snap list mosquitto", "snap install mosquitto --channel=2.0/stable")
	d.Ensure(ctx, snapApp(t, "mosquitto", "2.0/stable"), nil)
	wantCalls(t, run.take(), "snap list mosquitto")
	d.Ensure(ctx, snapApp(t, "mosquitto", "2.0/edge"), nil)
	wantCalls(t, run.take(), "snap list mosquitto", "snap refresh mosquitto --channel=2.0/edge")

	// The app now names a snap that was already installed: fleetmesh
	// removes its own snap, adopts the other, and never removes that one.
	d.Ensure(ctx, snapApp(t, "node-red", ""), nil)
	wantCalls(t, run.take(), "snap list mosquitto", "snap remove mosquitto", "snap list node-red")
	obs, _ := d.List(ctx)
	if len(obs) != 1 || obs[0].App != "broker" || obs[0].Status.State != StateRunning {
		t.Errorf("List = %+v", obs)
	}
	run.take()
	if err := d.Remove(ctx, "broker"); err != nil {
		t.Fatal(err)
	}
	wantCalls(t, run.take())
	if !installed["node-red"] {
		t.Error("an adopted snap was removed")
	}
	if obs, _ := d.List(ctx); len(obs) != 0 {
		t.Errorf("List after Remove = %+v", obs)
	}
}

func TestKubernetesDriver(t *testing.T) {
	ctx := context.Background()
	inst := resolveYAML(t, `apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: infer, version: "0.3"}
spec:
  deployment:
    type: kubernetes
    image: plant/infer:0.3
    args: [--model, /models/a]
    ports: ["8500:8500"]
    volumes: ["/srv/models:/models:ro"]
    env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    resources: {limits: {memory: 1Gi, cpu: "2"}}
`)
	listed := `{"items":[]}`
	run := &fakeRunner{}
	run.respond = func(cmd []string) ([]byte, error) {
		if cmd[1] == "--kubeconfig" {
			cmd = append(cmd[:1:1], cmd[3:]...)
		}
		if cmd[1] == "get" {
			return []byte(listed), nil
		}
		return nil, nil
	}
	work := t.TempDir()
	d, err := NewKubernetesDriver(KubernetesConfig{Node: "c1", WorkDir: work, Runner: run, Kubeconfig: "/etc/rancher/k3s/k3s.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ensure(ctx, inst, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(work, "k8s-infer.yaml")
	sel := "fleetmesh.io/managed=true,fleetmesh.io/node=c1,fleetmesh.io/app=infer"
	kc := "kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml "
	wantCalls(t, run.take(),
		kc+"get deployments --namespace fleetmesh --selector "+sel+" --output json",
		kc+"apply --filename "+path)

	// What was applied parses back as a Namespace and a Deployment.
	dec := yaml.NewDecoder(strings.NewReader(run.files[path]))
	var ns, dep map[string]any
	if err := dec.Decode(&ns); err != nil || ns["kind"] != "Namespace" {
		t.Fatalf("first object: %v %v", ns, err)
	}
	if err := dec.Decode(&dep); err != nil || dep["kind"] != "Deployment" {
		t.Fatalf("second object: %v %v", dep, err)
	}
	ctr := dep["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if ctr["image"] != "plant/infer:0.3" || fmt.Sprint(ctr["env"]) != "[map[name:NODE value:c1]]" ||
		fmt.Sprint(ctr["resources"]) != "map[limits:map[cpu:2000m memory:1073741824]]" ||
		fmt.Sprint(ctr["ports"]) != "[map[containerPort:8500 hostPort:8500 protocol:TCP]]" {
		t.Errorf("container = %v", ctr)
	}
	if ann := dep["metadata"].(map[string]any)["annotations"].(map[string]any); ann[K8sAnnSpecHash] != inst.Hash {
		t.Errorf("annotations = %v", ann)
	}

	// Once the cluster has it at this hash, Ensure only looks.
	listed = fmt.Sprintf(`{"items":[{"metadata":{"name":"fleetmesh-infer","labels":{%q:"true",%q:"c1",%q:"infer"},"annotations":{%q:"0.3",%q:%q}},"spec":{"replicas":1},"status":{"readyReplicas":1}}]}`,
		K8sLabelManaged, K8sLabelNode, K8sLabelApp, K8sAnnVersion, K8sAnnSpecHash, inst.Hash)
	if st, err := d.Ensure(ctx, inst, nil); err != nil || st.State != StateRunning {
		t.Errorf("steady state: %+v %v", st, err)
	}
	wantCalls(t, run.take(), kc+"get deployments --namespace fleetmesh --selector "+sel+" --output json")

	if err := d.Remove(ctx, "infer"); err != nil {
		t.Fatal(err)
	}
	wantCalls(t, run.take(), kc+"delete deployments --namespace fleetmesh --selector "+sel+" --ignore-not-found")
}
