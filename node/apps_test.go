package node_test

import (
	"context"
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
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func needDocker(t *testing.T) {
	t.Helper()
	if err := testenv.BuildHealthImage(); err != nil {
		if os.Getenv("FLEETMESH_REQUIRE_DOCKER") != "" {
			t.Fatal(err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
}

func collector(version, image, extra string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: collector, version: %q}
spec:
  selector: {role: sensor}
  deployment:
    type: container
    image: %s
    ports: ["8080"]
    env:
      - {name: SAMPLE_RATE, value: "10"}
      - name: EDGE_DEVICE_ID
        valueFrom: {fieldRef: {fieldPath: metadata.name}}
    resources:
      requests: {memory: 32Mi, cpu: 100m}
      limits: {memory: 64Mi, cpu: "0.5"}
    restartPolicy: unless-stopped
    healthCheck:
      httpGet: {path: /health, port: 8080}
      periodSeconds: 1
      failureThreshold: 2
%s`, version, image, extra))
}

func appFleet(t *testing.T) *testenv.Fleet {
	needDocker(t)
	return testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{
		{Name: "s1", Role: "sensor"}, {Name: "s2", Role: "sensor"}, {Name: "c1", Role: "compute"}}})
}

// running returns the node's running containers of the app.
func running(f *testenv.Fleet, node string) ([]container.Summary, error) {
	cs, err := f.Containers(node)
	if err != nil {
		return nil, err
	}
	var out []container.Summary
	for _, c := range cs {
		if c.State == "running" {
			out = append(out, c)
		}
	}
	return out, nil
}

func waitAppEverywhere(t *testing.T, f *testenv.Fleet, version, status string) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, func() error {
		for _, n := range f.Live() {
			d, err := f.Client(n).App(context.Background(), "collector")
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, ns := range d.Nodes {
				got[ns.Node] = ns.Version + "/" + ns.Status
			}
			for _, s := range []string{"s1", "s2"} {
				if got[s] != version+"/"+status {
					return fmt.Errorf("%s sees collector on %s as %q, want %s/%s", n, s, got[s], version, status)
				}
			}
			if _, ok := got["c1"]; ok {
				return fmt.Errorf("%s: collector reported on compute node c1", n)
			}
		}
		return nil
	})
}

// 1–3. Deploying to role sensor runs the container on every sensor and on no
// other node, with the declared ports, env, limits and labels; a new version
// replaces it; a container removed by hand comes back, an unmanaged one is
// left alone; apps rm removes it everywhere.
func TestAppLifecycleOnRealDocker(t *testing.T) {
	f := appFleet(t)
	ctx := context.Background()
	res, err := f.Client("c1").DeployApp(ctx, collector("1.0.0", testenv.HealthImageV1, ""))
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "collector" || res.Version != "1.0.0" || res.Index == 0 {
		t.Fatalf("deploy answered %+v", res)
	}
	waitAppEverywhere(t, f, "1.0.0", "healthy")

	cli, err := testenv.Docker()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, s := range []string{"s1", "s2"} {
		cs, err := running(f, s)
		if err != nil || len(cs) != 1 {
			t.Fatalf("%s: %d running containers (%v)", s, len(cs), err)
		}
		in, err := cli.ContainerInspect(ctx, cs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		env := strings.Join(in.Config.Env, " ")
		if !strings.Contains(env, "EDGE_DEVICE_ID="+s) || !strings.Contains(env, "SAMPLE_RATE=10") {
			t.Errorf("%s: env %v", s, in.Config.Env)
		}
		if in.HostConfig.Memory != 64<<20 || in.HostConfig.NanoCPUs != 500_000_000 {
			t.Errorf("%s: memory %d, nanocpus %d", s, in.HostConfig.Memory, in.HostConfig.NanoCPUs)
		}
		if in.HostConfig.RestartPolicy.Name != "unless-stopped" {
			t.Errorf("%s: restart policy %q", s, in.HostConfig.RestartPolicy.Name)
		}
		if in.Config.Labels["io.fleetmesh.app"] != "collector" || in.Config.Labels["io.fleetmesh.version"] != "1.0.0" {
			t.Errorf("%s: labels %v", s, in.Config.Labels)
		}
		if _, ok := in.Config.ExposedPorts["8080/tcp"]; !ok {
			t.Errorf("%s: port 8080 not exposed: %v", s, in.Config.ExposedPorts)
		}
	}
	for _, n := range []string{"gw1", "c1"} {
		if cs, _ := f.Containers(n); len(cs) != 0 {
			t.Errorf("%s runs %d containers; the selector is role: sensor", n, len(cs))
		}
	}

	// A published port (one node only: the sensors share this engine, and
	// with it the host's ports).
	port := freePort(t)
	pub := fmt.Sprintf(`apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: api, version: "1"}
spec:
  selector: {nodes: [s2]}
  deployment:
    type: container
    image: %s
    ports: ["127.0.0.1:%d:8080"]
    env: [{name: EDGE_SITE, valueFrom: {fieldRef: {fieldPath: metadata.site}}}]
`, testenv.HealthImageV1, port)
	if _, err := f.Client("gw1").DeployApp(ctx, []byte(pub)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/env", port))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var env map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			return err
		}
		if env["EDGE_SITE"] != f.Member("s2").Site {
			return fmt.Errorf("env through the published port: %v", env)
		}
		return nil
	})
	if _, err := f.Client("gw1").RemoveApp(ctx, "api"); err != nil {
		t.Fatal(err)
	}

	// Drift: remove s1's container by hand; leave an unmanaged container
	// beside it.
	cs, _ := running(f, "s1")
	oldID := cs[0].ID
	if err := cli.ContainerRemove(ctx, oldID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	unmanaged, err := cli.ContainerCreate(ctx, &container.Config{Image: testenv.HealthImageV1}, nil, nil, nil, f.ContainerPrefix+"unmanaged")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.ContainerRemove(ctx, unmanaged.ID, container.RemoveOptions{Force: true})
	testenv.Eventually(t, 30*time.Second, func() error {
		cs, err := running(f, "s1")
		if err != nil {
			return err
		}
		if len(cs) != 1 || cs[0].ID == oldID {
			return errors.New("s1's container has not come back")
		}
		return nil
	})
	if _, err := cli.ContainerInspect(ctx, unmanaged.ID); err != nil {
		t.Fatalf("the unmanaged container was touched: %v", err)
	}

	// A new version replaces the old container.
	if _, err := f.Client("s2").DeployApp(ctx, collector("1.1.0", testenv.HealthImageV2, "")); err != nil {
		t.Fatal(err)
	}
	waitAppEverywhere(t, f, "1.1.0", "healthy")
	for _, s := range []string{"s1", "s2"} {
		cs, _ := f.Containers(s)
		if len(cs) != 1 || cs[0].Image != testenv.HealthImageV2 {
			t.Fatalf("%s: %d containers after the update (%v)", s, len(cs), cs)
		}
	}
	d, err := f.Client("gw1").App(ctx, "collector")
	if err != nil || len(d.Versions) != 2 {
		t.Fatalf("the spec should keep both versions: %+v %v", d, err)
	}

	// apps rm removes it everywhere.
	if _, err := f.Client("s1").RemoveApp(ctx, "collector"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, s := range []string{"s1", "s2"} {
			if cs, _ := f.Containers(s); len(cs) != 0 {
				return fmt.Errorf("%s still has %d containers", s, len(cs))
			}
		}
		return nil
	})
	if _, err := f.Client("c1").App(ctx, "collector"); err == nil {
		t.Error("a removed app is still listed")
	}
}

// 4. A failing health check makes the app unhealthy and the device error,
// visible from any node.
func TestUnhealthyAppMakesDeviceError(t *testing.T) {
	f := appFleet(t)
	ctx := context.Background()
	if _, err := f.Client("gw1").DeployApp(ctx, collector("1.0.0", testenv.HealthImageV1, "")); err != nil {
		t.Fatal(err)
	}
	waitAppEverywhere(t, f, "1.0.0", "healthy")
	cli, err := testenv.Docker()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cs, _ := running(f, "s2")
	in, err := cli.ContainerInspect(ctx, cs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	ip := in.NetworkSettings.IPAddress
	for _, nw := range in.NetworkSettings.Networks {
		if ip == "" {
			ip = nw.IPAddress
		}
	}
	resp, err := http.Post("http://"+ip+":8080/fail", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, n := range f.Live() {
			v, _, err := f.Client(n).Node(ctx, "s2")
			if err != nil {
				return err
			}
			if v.State != "error" || !strings.Contains(v.Message, "collector") {
				return fmt.Errorf("%s sees s2 as %s (%q)", n, v.State, v.Message)
			}
			fv, _, err := f.FleetView(n)
			if err != nil {
				return err
			}
			if fv.ByState["error"] != 1 {
				return fmt.Errorf("%s: by state %v", n, fv.ByState)
			}
		}
		return nil
	})
	d, _ := f.Client("c1").App(ctx, "collector")
	for _, ns := range d.Nodes {
		if ns.Node == "s2" && ns.Status != "unhealthy" {
			t.Errorf("s2's collector is %s, want unhealthy", ns.Status)
		}
	}
}

// 5. An edge node restarted while cut off from every gateway starts its
// apps again from what it last applied.
func TestOfflineRestartStartsApps(t *testing.T) {
	f := appFleet(t)
	ctx := context.Background()
	if _, err := f.Client("gw1").DeployApp(ctx, collector("1.0.0", testenv.HealthImageV1, "")); err != nil {
		t.Fatal(err)
	}
	waitAppEverywhere(t, f, "1.0.0", "healthy")
	f.Kill("s1")
	// The "reboot" lost the container too.
	cli, err := testenv.Docker()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cs, _ := f.Containers("s1")
	for _, c := range cs {
		cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	var others []string
	for _, n := range f.Names() {
		if n != "s1" {
			others = append(others, n)
		}
	}
	f.Partition([]string{"s1"}, others)
	f.Restart("s1")
	testenv.Eventually(t, 60*time.Second, func() error {
		cs, err := running(f, "s1")
		if err != nil {
			return err
		}
		if len(cs) != 1 {
			return errors.New("s1 has not started its app while cut off")
		}
		v, _, err := f.Client("s1").Node(ctx, "s1")
		if err != nil {
			return err
		}
		for _, a := range v.Apps {
			if a.Name == "collector" && a.Status == "healthy" {
				return nil
			}
		}
		return fmt.Errorf("s1 reports apps %+v", v.Apps)
	})
	fv, meta, err := f.FleetView("s1")
	if err != nil {
		t.Fatal(err)
	}
	if fv.Offline == 0 || meta.Index == 0 {
		t.Errorf("cut-off s1 should see the others offline and still know its spec: %+v %+v", fv, meta)
	}
}

// 6. Bad manifests are refused with field-path errors, and the running apps
// are untouched.
func TestBadManifestsRefused(t *testing.T) {
	f := appFleet(t)
	ctx := context.Background()
	if _, err := f.Client("gw1").DeployApp(ctx, collector("1.0.0", testenv.HealthImageV1, "")); err != nil {
		t.Fatal(err)
	}
	waitAppEverywhere(t, f, "1.0.0", "healthy")
	before, _ := running(f, "s1")
	good := string(collector("2.0.0", testenv.HealthImageV1, ""))
	cases := map[string]struct{ body, want string }{
		"not yaml":                     {"{{{", "manifest"},
		"empty":                        {"", "manifest"},
		"wrong kind":                   {strings.Replace(good, "kind: EdgeApplication", "kind: Pod", 1), "kind"},
		"wrong apiVersion":             {strings.Replace(good, "fleetmesh.io/v1", "v2", 1), "apiVersion"},
		"unknown field":                {strings.Replace(good, "restartPolicy:", "restartPolicyy:", 1), "restartPolicyy"},
		"bad port":                     {strings.Replace(good, `ports: ["8080"]`, `ports: ["8080", "80:x"]`, 1), "spec.deployment.ports[1]"},
		"bad memory":                   {strings.Replace(good, "memory: 64Mi", "memory: lots", 1), "spec.deployment.resources.limits.memory"},
		"bad cpu":                      {strings.Replace(good, `cpu: "0.5"`, `cpu: fast`, 1), "spec.deployment.resources.limits.cpu"},
		"bad restart":                  {strings.Replace(good, "unless-stopped", "sometimes", 1), "restartPolicy"},
		"bad type":                     {strings.Replace(good, "type: container", "type: vm", 1), "spec.deployment.type"},
		"no image":                     {strings.Replace(good, "image: "+testenv.HealthImageV1, "", 1), "image"},
		"bad fieldPath":                {strings.Replace(good, "metadata.name", "metadata.uid", 1), "fieldPath"},
		"privileged":                   {strings.Replace(good, "restartPolicy: unless-stopped", "restartPolicy: unless-stopped\n    privileged: true", 1), "privileged"},
		"bad name":                     {strings.Replace(good, "name: collector", "name: Collector_1", 1), "metadata.name"},
		"no version":                   {strings.Replace(good, `version: "2.0.0"`, `version: ""`, 1), "metadata.version"},
		"bad health port":              {strings.Replace(good, "port: 8080}", "port: 99999}", 1), "healthCheck"},
		"bad pull policy":              {strings.Replace(good, "restartPolicy: unless-stopped", "restartPolicy: unless-stopped\n    imagePullPolicy: Sometimes", 1), "imagePullPolicy"},
		"same version, other manifest": {strings.Replace(string(collector("1.0.0", testenv.HealthImageV2, "")), "", "", 1), "already deployed"},
	}
	for name, c := range cases {
		_, err := f.Client("s2").DeployApp(ctx, []byte(c.body))
		var se *api.StatusError
		if !errors.As(err, &se) || (se.Code != 400 && se.Code != 409) || !strings.Contains(se.Message, c.want) {
			t.Errorf("%s: got %v, want 400/409 mentioning %q", name, err, c.want)
		}
	}
	d, err := f.Client("gw1").App(ctx, "collector")
	if err != nil || d.Version != "1.0.0" || len(d.Versions) != 1 {
		t.Fatalf("refused manifests changed the spec: %+v %v", d, err)
	}
	after, _ := running(f, "s1")
	if len(after) != 1 || after[0].ID != before[0].ID {
		t.Fatal("refused manifests disturbed the running app")
	}
}
