package apps

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/fleetmesh/fleetmesh/testenv/image"
	"github.com/fleetmesh/fleetmesh/testenv/wait"
)

// The test image: apps/testdata/healthsrv, static, FROM scratch, built once
// per test binary through the Docker API (there is no registry here).
const (
	testImage1 = "fleetmesh-test/apps-healthsrv:1"
	testImage2 = "fleetmesh-test/apps-healthsrv:2"
)

var (
	dockerCli *client.Client
	dockerErr error // why the Docker tests cannot run
)

func TestMain(m *testing.M) {
	dockerCli, dockerErr = setupDocker()
	code := m.Run()
	if dockerCli != nil {
		dockerCli.Close()
	}
	os.Exit(code)
}

func setupDocker() (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker engine not reachable: %w", err)
	}
	if err := buildTestImage(ctx, cli); err != nil {
		cli.Close()
		return nil, fmt.Errorf("build test image: %w", err)
	}
	return cli, nil
}

func buildTestImage(ctx context.Context, cli *client.Client) error {
	return image.BuildGo(ctx, cli, "./testdata/healthsrv", 8080, testImage1, testImage2)
}

func needDocker(t *testing.T) *client.Client {
	t.Helper()
	if dockerErr != nil {
		if os.Getenv("FLEETMESH_REQUIRE_DOCKER") != "" {
			t.Fatal(dockerErr)
		}
		t.Skip(dockerErr)
	}
	return dockerCli
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testNode is one device of a test fleet sharing this machine's engine.
type testNode struct {
	info    NodeInfo
	drv     *DockerDriver
	rec     *Reconciler
	dataDir string
}

func newTestNode(t *testing.T, role string, dataDir string) *testNode {
	t.Helper()
	cli := needDocker(t)
	name := "t" + randomSuffix() + "-" + role
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	n := &testNode{info: NodeInfo{Name: name, Role: role, Site: "plant-a"}, dataDir: dataDir}
	var err error
	n.drv, err = NewDockerDriver(DockerConfig{Client: cli, Node: name, NamePrefix: name + "-", PullTimeout: 5 * time.Second, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n.rec = n.newReconciler(t)
	t.Cleanup(func() { removeNodeContainers(t, cli, name) })
	return n
}

// newReconciler makes a reconciler for the node, as at agent start.
func (n *testNode) newReconciler(t *testing.T) *Reconciler {
	t.Helper()
	r, err := NewReconciler(ReconcilerConfig{
		Node:           n.info,
		Drivers:        map[DeploymentType]Driver{TypeContainer: n.drv},
		Store:          NewLastApplied(n.dataDir),
		ResyncInterval: time.Hour, // tests trigger passes themselves
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stopProbes)
	return r
}

// removeNodeContainers removes the containers a test node created: only
// those carrying its node label.
func removeNodeContainers(t testing.TB, cli *client.Client, node string) {
	ctx := context.Background()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"), filters.Arg("label", LabelNode+"="+node))})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, c := range cs {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func (n *testNode) reconcile(t *testing.T) {
	t.Helper()
	if err := n.rec.Reconcile(context.Background()); err != nil {
		t.Fatalf("%s: reconcile: %v", n.info.Name, err)
	}
}

func (n *testNode) containers(t *testing.T, app string) []container.Summary {
	t.Helper()
	cs, err := n.drv.owned(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (n *testNode) inspect(t *testing.T, app string) container.InspectResponse {
	t.Helper()
	cs := n.containers(t, app)
	if len(cs) != 1 {
		t.Fatalf("%s: want 1 container for %s, have %d", n.info.Name, app, len(cs))
	}
	ci, err := dockerCli.ContainerInspect(context.Background(), cs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

func (n *testNode) waitState(t *testing.T, app string, want State) AppStatus {
	t.Helper()
	var st AppStatus
	wait.Eventually(t, 30*time.Second, func() error {
		var ok bool
		st, ok = n.rec.Status()[app]
		if !ok {
			return fmt.Errorf("%s: no status for %s", n.info.Name, app)
		}
		if st.State != want {
			return fmt.Errorf("%s: %s is %s (%s), want %s", n.info.Name, app, st.State, st.Message, want)
		}
		return nil
	})
	return st
}

// manifest makes a healthsrv application; body is YAML indented to sit
// under spec.deployment.
func manifest(t *testing.T, name, version, image, selector, body string) *Manifest {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: %s, version: %q}
spec:
  selector: %s
  deployment:
    type: container
    image: %s
%s`, name, version, selector, image, body)
	m, err := ParseAndValidate([]byte(doc), ValidateOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return m
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func TestDockerDeployToRole(t *testing.T) {
	t.Parallel()
	sensor := newTestNode(t, "sensor", "")
	gateway := newTestNode(t, "gateway", "")
	port := freePort(t)
	vol := t.TempDir()
	m := manifest(t, "collector", "1.4.0", testImage1, "{role: sensor}", fmt.Sprintf(`
    ports: ["127.0.0.1:%d:8080"]
    volumes: ["%s:/data:ro"]
    env:
      - {name: SAMPLE_RATE, value: "10"}
      - name: EDGE_DEVICE_ID
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
      - name: EDGE_SITE
        valueFrom: {fieldRef: {fieldPath: metadata.site}}
    resources:
      requests: {memory: 32Mi, cpu: 250m}
      limits: {memory: 64Mi, cpu: "0.5"}
    restartPolicy: on-failure
`, port, vol))
	for _, n := range []*testNode{sensor, gateway} {
		if err := n.rec.SetDesired(Desired{Index: 7, Apps: []*Manifest{m}}); err != nil {
			t.Fatal(err)
		}
		n.reconcile(t)
	}

	if cs := gateway.containers(t, ""); len(cs) != 0 {
		t.Errorf("gateway runs %d containers of a sensor app", len(cs))
	}
	if st := gateway.rec.Status(); len(st) != 0 {
		t.Errorf("gateway reports %v", st)
	}

	ci := sensor.inspect(t, "collector")
	if want := sensor.drv.ContainerName("collector"); ci.Name != "/"+want {
		t.Errorf("name = %s, want %s", ci.Name, want)
	}
	inst, err := Resolve(m, sensor.info)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		LabelManaged: "true", LabelNode: sensor.info.Name, LabelApp: "collector",
		LabelVersion: "1.4.0", LabelSpecHash: inst.Hash,
	} {
		if got := ci.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	hc := ci.HostConfig
	if hc.Memory != 64<<20 || hc.MemoryReservation != 32<<20 || hc.NanoCPUs != 500_000_000 || hc.CPUShares != 256 {
		t.Errorf("limits: memory %d reservation %d nanocpus %d shares %d", hc.Memory, hc.MemoryReservation, hc.NanoCPUs, hc.CPUShares)
	}
	if hc.RestartPolicy.Name != container.RestartPolicyOnFailure {
		t.Errorf("restart policy = %q", hc.RestartPolicy.Name)
	}
	if len(hc.Binds) != 1 || hc.Binds[0] != vol+":/data:ro" {
		t.Errorf("binds = %v", hc.Binds)
	}
	if b := hc.PortBindings["8080/tcp"]; len(b) != 1 || b[0].HostIP != "127.0.0.1" || b[0].HostPort != fmt.Sprint(port) {
		t.Errorf("port bindings = %v", hc.PortBindings)
	}

	var env map[string]string
	wait.Eventually(t, 20*time.Second, func() error {
		return getJSON(fmt.Sprintf("http://127.0.0.1:%d/env", port), &env)
	})
	for k, want := range map[string]string{"SAMPLE_RATE": "10", "EDGE_DEVICE_ID": sensor.info.Name, "EDGE_SITE": "plant-a"} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	st := sensor.waitState(t, "collector", StateRunning)
	if st.Version != "1.4.0" || st.Since.IsZero() {
		t.Errorf("status = %+v", st)
	}

	// A second pass with nothing changed touches nothing.
	sensor.reconcile(t)
	if again := sensor.inspect(t, "collector"); again.ID != ci.ID {
		t.Errorf("an unchanged spec recreated the container")
	}
}

func TestDockerReplaceAndRemove(t *testing.T) {
	t.Parallel()
	n := newTestNode(t, "sensor", "")
	port := freePort(t)
	body := fmt.Sprintf("    ports: [\"127.0.0.1:%d:8080\"]\n", port)
	v1 := manifest(t, "web", "1", testImage1, "{role: sensor}", body)
	if err := n.rec.SetDesired(Desired{Index: 1, Apps: []*Manifest{v1}}); err != nil {
		t.Fatal(err)
	}
	n.reconcile(t)
	old := n.inspect(t, "web")

	v2 := manifest(t, "web", "2", testImage2, "{role: sensor}", body)
	if err := n.rec.SetDesired(Desired{Index: 2, Apps: []*Manifest{v2}}); err != nil {
		t.Fatal(err)
	}
	n.reconcile(t)
	cur := n.inspect(t, "web") // exactly one container
	if cur.ID == old.ID {
		t.Fatal("new version did not replace the container")
	}
	if cur.Config.Labels[LabelVersion] != "2" || cur.Config.Image != testImage2 {
		t.Errorf("replacement runs version %s of %s", cur.Config.Labels[LabelVersion], cur.Config.Image)
	}
	if st := n.waitState(t, "web", StateRunning); st.Version != "2" {
		t.Errorf("status version = %s", st.Version)
	}

	if err := n.rec.SetDesired(Desired{Index: 3}); err != nil {
		t.Fatal(err)
	}
	n.reconcile(t)
	if cs := n.containers(t, ""); len(cs) != 0 {
		t.Errorf("removed app still has %d containers", len(cs))
	}
	if st := n.rec.Status(); len(st) != 0 {
		t.Errorf("status after removal = %v", st)
	}
}

func TestDockerDriftRepairLeavesUnmanagedAlone(t *testing.T) {
	t.Parallel()
	cli := needDocker(t)
	ctx := context.Background()
	n := newTestNode(t, "sensor", "")

	// A container fleetmesh does not own: plain name, no labels. One more
	// squats the name fleetmesh would give the app "squat".
	unmanaged := "unmanaged-" + randomSuffix()
	squatter := n.drv.ContainerName("squat")
	for _, name := range []string{unmanaged, squatter} {
		resp, err := cli.ContainerCreate(ctx, &container.Config{Image: testImage1}, nil, nil, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		id := resp.ID
		t.Cleanup(func() { cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}) })
		if err := cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	app := manifest(t, "keeper", "1", testImage1, "{}", "")
	squat := manifest(t, "squat", "1", testImage1, "{}", "")
	if err := n.rec.SetDesired(Desired{Index: 1, Apps: []*Manifest{app, squat}}); err != nil {
		t.Fatal(err)
	}
	err := n.rec.Reconcile(ctx)
	if !errors.Is(err, ErrNotOwned) {
		t.Errorf("name clash with an unmanaged container: err = %v, want ErrNotOwned", err)
	}
	if st := n.rec.Status()["squat"]; st.State != StateFailed || !strings.Contains(st.Message, "not managed by fleetmesh") {
		t.Errorf("squat status = %+v", st)
	}
	first := n.inspect(t, "keeper")

	// Removed by hand: back on the next pass.
	if err := cli.ContainerRemove(ctx, first.ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	n.rec.Reconcile(ctx)
	if again := n.inspect(t, "keeper"); again.ID == first.ID || !again.State.Running {
		t.Errorf("container removed by hand did not come back running")
	}
	// Stopped by hand: started again (restart policy unless-stopped).
	if err := cli.ContainerStop(ctx, n.inspect(t, "keeper").ID, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}
	n.rec.Reconcile(ctx)
	if !n.inspect(t, "keeper").State.Running {
		t.Errorf("container stopped by hand was not started again")
	}

	// An update the device refuses (privileged, not allowed by policy)
	// leaves the running version alone.
	bad := manifest(t, "keeper", "2", testImage2, "{}", "")
	bad.Spec.Deployment.Privileged = true
	n.rec.SetDesired(Desired{Index: 2, Apps: []*Manifest{bad, squat}})
	if err := n.rec.Reconcile(ctx); !errors.Is(err, ErrInvalidManifest) {
		t.Errorf("refused manifest: err = %v", err)
	}
	if ci := n.inspect(t, "keeper"); ci.Config.Labels[LabelVersion] != "1" || !ci.State.Running {
		t.Errorf("refused update touched the running app")
	}
	if st := n.rec.Status()["keeper"]; st.State != StateFailed || !strings.Contains(st.Message, "privileged") {
		t.Errorf("refused update status = %+v", st)
	}

	// Nothing desired: our containers go, the others stay.
	n.rec.SetDesired(Desired{Index: 3})
	if err := n.rec.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if cs := n.containers(t, ""); len(cs) != 0 {
		t.Errorf("%d managed containers left", len(cs))
	}
	for _, name := range []string{unmanaged, squatter} {
		ci, err := cli.ContainerInspect(ctx, name)
		if err != nil || !ci.State.Running {
			t.Errorf("unmanaged container %s was touched: %v", name, err)
		}
	}
}

func TestDockerHealthChecks(t *testing.T) {
	t.Parallel()
	n := newTestNode(t, "sensor", "")
	port := freePort(t)
	fast := "      periodSeconds: 1\n      failureThreshold: 1\n"
	apps := []*Manifest{
		manifest(t, "http", "1", testImage1, "{}", fmt.Sprintf(`
    ports: ["127.0.0.1:%d:8080"]
    healthCheck:
      httpGet: {path: /health, port: 8080}
%s`, port, fast)),
		// No published port: checked at the container's address.
		manifest(t, "tcp", "1", testImage1, "{}", "    healthCheck:\n      tcpSocket: {port: 8080}\n"+fast),
		manifest(t, "exec", "1", testImage1, "{}", "    healthCheck:\n      exec: {command: [/healthsrv, check]}\n"+fast),
		// Nothing listens on 9999.
		manifest(t, "deaf", "1", testImage1, "{}", "    healthCheck:\n      tcpSocket: {port: 9999}\n"+fast),
	}
	changes := make(chan string, 100)
	n.rec.cfg.OnStatusChange = func(app string, st AppStatus) {
		select {
		case changes <- app + "=" + string(st.State):
		default:
		}
	}
	if err := n.rec.SetDesired(Desired{Index: 1, Apps: apps}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, app := range []string{"http", "tcp", "exec"} {
		n.waitState(t, app, StateHealthy)
	}
	st := n.waitState(t, "deaf", StateUnhealthy)
	if !strings.Contains(st.Message, "health check failed") {
		t.Errorf("deaf message = %q", st.Message)
	}

	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/fail", port), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st = n.waitState(t, "http", StateUnhealthy)
	if !strings.Contains(st.Message, "500") {
		t.Errorf("unhealthy message = %q", st.Message)
	}
	if got := Failing(n.rec.Status()); strings.Join(got, ",") != "deaf,http" {
		t.Errorf("Failing = %v", got)
	}
	found := false
	for len(changes) > 0 {
		if <-changes == "http=unhealthy" {
			found = true
		}
	}
	if !found {
		t.Error("OnStatusChange was not told http became unhealthy")
	}
	resp, err = http.Post(fmt.Sprintf("http://127.0.0.1:%d/ok", port), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	n.waitState(t, "http", StateHealthy)
}

func TestDockerOfflineRestartFromLastApplied(t *testing.T) {
	t.Parallel()
	cli := needDocker(t)
	ctx := context.Background()
	n := newTestNode(t, "sensor", "")
	m := manifest(t, "offline", "3", testImage1, "{role: sensor}", "")
	if err := n.rec.SetDesired(Desired{Index: 42, Apps: []*Manifest{m}}); err != nil {
		t.Fatal(err)
	}
	n.reconcile(t)
	before := n.inspect(t, "offline")

	// The device reboots into an engine that lost the container, with no
	// gateway reachable: a fresh reconciler with no desired input.
	if err := cli.ContainerRemove(ctx, before.ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	rebooted := n.newReconciler(t)
	if d := rebooted.Desired(); d.Index != 42 || len(d.Apps) != 1 {
		t.Fatalf("loaded desired set = index %d, %d apps", d.Index, len(d.Apps))
	}
	if err := rebooted.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	after := n.inspect(t, "offline")
	if !after.State.Running || after.Config.Labels[LabelSpecHash] != before.Config.Labels[LabelSpecHash] {
		t.Errorf("app not restarted from the last-applied set")
	}
	if st := rebooted.Status()["offline"]; st.State != StateRunning {
		t.Errorf("status = %+v", st)
	}
}

func TestDockerFreshNodeRemovesNothingUntilTold(t *testing.T) {
	t.Parallel()
	n := newTestNode(t, "sensor", "")
	m := manifest(t, "previous", "1", testImage1, "{}", "")
	n.rec.SetDesired(Desired{Index: 1, Apps: []*Manifest{m}})
	n.reconcile(t)
	// Same node, a data dir without the store (lost or wiped).
	n.dataDir = t.TempDir()
	fresh := n.newReconciler(t)
	if err := fresh.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs := n.containers(t, "previous"); len(cs) != 1 {
		t.Errorf("a reconciler that never had a desired set removed containers")
	}
}

func TestDockerImageUnavailable(t *testing.T) {
	t.Parallel()
	n := newTestNode(t, "sensor", "")
	// The "registry" is a closed loopback port: the pull fails at once and
	// no traffic leaves this machine. :latest makes the policy Always.
	m := manifest(t, "ghost", "1", "127.0.0.1:1/fleetmesh-test/no-such-image:latest", "{}", "")
	n.rec.SetDesired(Desired{Index: 1, Apps: []*Manifest{m}})
	err := n.rec.Reconcile(context.Background())
	if !errors.Is(err, ErrImageUnavailable) {
		t.Fatalf("err = %v, want ErrImageUnavailable", err)
	}
	st := n.rec.Status()["ghost"]
	if st.State != StateFailed || !strings.Contains(st.Message, "pull failed") || !strings.Contains(st.Message, "not present locally") {
		t.Errorf("status = %+v; the message must say both that the pull failed and that there is no local copy", st)
	}
}

// A pinned tag present locally is used without asking any registry; with
// Never, a missing image is refused without a pull.
func TestDockerPullPolicies(t *testing.T) {
	t.Parallel()
	if got := defaultPullPolicy("plant/collector:1.4.0"); got != PullIfNotPresent {
		t.Errorf("pinned tag: %s", got)
	}
	for _, img := range []string{"plant/collector", "plant/collector:latest", "127.0.0.1:5000/x"} {
		if got := defaultPullPolicy(img); got != PullAlways {
			t.Errorf("%s: %s", img, got)
		}
	}
	n := newTestNode(t, "sensor", "")
	m := manifest(t, "never", "1", "127.0.0.1:1/fleetmesh-test/absent:3", "{}", "")
	m.Spec.Deployment.ImagePullPolicy = PullNever
	n.rec.SetDesired(Desired{Index: 1, Apps: []*Manifest{m}})
	n.rec.Reconcile(context.Background())
	if st := n.rec.Status()["never"]; st.State != StateFailed || !strings.Contains(st.Message, "imagePullPolicy is Never") || strings.Contains(st.Message, "pull failed") {
		t.Errorf("status = %+v", st)
	}
}
