package apps

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

func mustReadExample(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseIssueExample(t *testing.T) {
	m, err := ParseAndValidate(mustReadExample(t), ValidateOptions{})
	if err != nil {
		t.Fatalf("the issue's example must be accepted as written: %v", err)
	}
	d := m.Spec.Deployment
	if m.Metadata.Name != "collector" || m.Metadata.Version != "1.4.0" || m.Spec.Selector.Role != "sensor" {
		t.Errorf("metadata/selector = %+v %+v", m.Metadata, m.Spec.Selector)
	}
	if len(d.Ports) != 1 || d.Ports[0].HostPort != 8080 || d.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports = %+v", d.Ports)
	}
	if len(d.Volumes) != 1 || d.Volumes[0].HostPath != "/data/collector" || d.Volumes[0].ContainerPath != "/data" || d.Volumes[0].ReadOnly {
		t.Errorf("volumes = %+v", d.Volumes)
	}
	if d.Env[1].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("env = %+v", d.Env)
	}
	if d.Resources.Limits.CPU != "1" || d.Resources.Requests.Memory != "64Mi" {
		t.Errorf("resources = %+v %+v", d.Resources.Requests, d.Resources.Limits)
	}
	if d.HealthCheck.HTTPGet.Port != 8080 || d.HealthCheck.PeriodSeconds != 5 {
		t.Errorf("healthCheck = %+v", d.HealthCheck)
	}
	if m.Spec.Monitoring.Metrics.Port != 9090 || m.Spec.Update.Strategy != "rolling" {
		t.Errorf("monitoring/update = %+v %+v", m.Spec.Monitoring, m.Spec.Update)
	}
}

func TestParseJSONRoundTrip(t *testing.T) {
	m, err := ParseAndValidate(mustReadExample(t), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(m, "", "\t") // tab indentation: not valid YAML
	if err != nil {
		t.Fatal(err)
	}
	m2, err := ParseAndValidate(data, ValidateOptions{})
	if err != nil {
		t.Fatalf("JSON form: %v\n%s", err, data)
	}
	data2, _ := json.Marshal(m2)
	data1, _ := json.Marshal(m)
	if string(data1) != string(data2) {
		t.Errorf("round trip differs:\n%s\n%s", data1, data2)
	}
}

func TestParseLongForms(t *testing.T) {
	const doc = `
apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: broker, version: "2"}
spec:
  selector: {role: gateway, site: plant-a, labels: {line: "3"}, nodes: [gw1, gw2]}
  deployment:
    type: container
    image: eclipse-mosquitto:2.0
    ports:
      - "127.0.0.1:8080:80/tcp"
      - "[::1]:9000:9000/udp"
      - "1883"
      - {containerPort: 8883, hostPort: 8883, protocol: tcp, hostIP: 0.0.0.0}
    volumes:
      - /etc/mosquitto:/mosquitto/config:ro
      - {hostPath: /var/lib/mosquitto, containerPath: /mosquitto/data, readOnly: false}
    env:
      - name: ROLE
        valueFrom: {fieldRef: {fieldPath: metadata.role}}
      - name: LINE
        valueFrom: {fieldRef: {fieldPath: "metadata.labels['line']"}}
    resources: {limits: {cpu: 0.5, memory: 1Gi}}
    restartPolicy: on-failure
    healthCheck:
      tcpSocket: {port: 1883}
      timeoutSeconds: 2
      failureThreshold: 5
  update:
    strategy: canary
    canary: {percent: 10, pauseSeconds: 300}
    autoRollback: true
`
	m, err := ParseAndValidate([]byte(doc), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortSpec{
		{ContainerPort: 80, HostPort: 8080, Protocol: "tcp", HostIP: "127.0.0.1"},
		{ContainerPort: 9000, HostPort: 9000, Protocol: "udp", HostIP: "::1"},
		{ContainerPort: 1883},
		{ContainerPort: 8883, HostPort: 8883, Protocol: "tcp", HostIP: "0.0.0.0"},
	}
	for i, p := range m.Spec.Deployment.Ports {
		p.short = ""
		if p != want[i] {
			t.Errorf("ports[%d] = %+v, want %+v", i, p, want[i])
		}
	}
	if !m.Spec.Deployment.Volumes[0].ReadOnly {
		t.Errorf("volumes[0] not read-only")
	}
	if m.Spec.Deployment.Resources.Limits.CPU != "0.5" {
		t.Errorf("cpu 0.5 read as %q", m.Spec.Deployment.Resources.Limits.CPU)
	}
}

// badManifests are refused, each with the field path and what is wrong.
var badManifests = []struct {
	name string
	edit string // replaces the line starting with the same key in the example, or appends
	want []string
}{
	{"port not a number", `    ports: ["8080:8080", "80:x"]`, []string{`spec.deployment.ports[1]: "80:x": container port is not a number`}},
	{"host port not a number", `    ports: ["y:80"]`, []string{`spec.deployment.ports[0]: "y:80": host port is not a number`}},
	{"port out of range", `    ports: ["70000:80"]`, []string{`spec.deployment.ports[0]: "70000:80": host port 70000 is not a port`}},
	{"bad protocol", `    ports: ["80:80/sctp"]`, []string{`spec.deployment.ports[0]: "80:80/sctp": protocol "sctp"`}},
	{"port twice", `    ports: ["80:80", "80:81"]`, []string{`spec.deployment.ports[1]: "80:81": host port 80/tcp is already published by ports[0]`}},
	{"unknown long port field", `    ports: [{containerPort: 80, hostport: 80}]`, []string{`spec.deployment.ports[0].hostport: unknown field; did you mean "hostPort"?`}},
	{"relative volume", `    volumes: ["data:/data"]`, []string{`spec.deployment.volumes[0]: "data:/data": host path "data" must be absolute`}},
	{"volume mode", `    volumes: ["/a:/b:rx"]`, []string{`spec.deployment.volumes[0]: "/a:/b:rx": mode "rx" is not ro or rw`}},
	{"unknown field", `    restartpolicy: always`, []string{`spec.deployment.restartpolicy: unknown field; did you mean "restartPolicy"?`}},
	{"restart policy", `    restartPolicy: sometimes`, []string{`spec.deployment.restartPolicy: "sometimes"`}},
	{"memory unit", `      limits: {memory: 256m, cpu: "1"}`, []string{`spec.deployment.resources.limits.memory: "256m": unknown unit "m"`}},
	{"cpu", `      limits: {memory: 256Mi, cpu: lots}`, []string{`spec.deployment.resources.limits.cpu: "lots": not a cpu quantity`}},
	{"request above limit", `      limits: {memory: 32Mi, cpu: 100m}`, []string{`spec.deployment.resources.requests.memory: "64Mi" is more than the limit "32Mi"`, `spec.deployment.resources.requests.cpu: "250m" is more than the limit "100m"`}},
	{"fieldPath", `        valueFrom: {fieldRef: {fieldPath: spec.nodeName}}`, []string{`spec.deployment.env[1].valueFrom.fieldRef.fieldPath: "spec.nodeName"`}},
	{"env name", `      - {name: 1RATE, value: "10"}`, []string{`spec.deployment.env[0].name: "1RATE" is not a variable name`}},
	{"privileged", `    privileged: true`, []string{`spec.deployment.privileged: refused by fleet policy`}},
	{"deployment type", `    type: vm`, []string{`spec.deployment.type: "vm" is not a deployment type`}},
	{"role", `  selector: {role: router}`, []string{`spec.selector.role: "router" is not a role`}},
	{"name", `metadata: {name: Collector_1, version: "1.4.0"}`, []string{`metadata.name: "Collector_1"`}},
	{"version missing", `metadata: {name: collector}`, []string{`metadata.version: required`}},
	{"api version", `apiVersion: fleetmesh.io/v2`, []string{`apiVersion: "fleetmesh.io/v2" is not supported`}},
	{"kind", `kind: Deployment`, []string{`kind: "Deployment" is not supported`}},
	{"image", `    image: "Plant/Collector:1.4.0"`, []string{`spec.deployment.image: "Plant/Collector:1.4.0" is not an image reference`}},
	{"health port type", `      httpGet: {path: /health, port: http}`, []string{`spec.deployment.healthCheck.httpGet.port: "http" is not a whole number`}},
	{"health two actions", `      httpGet: {path: health, port: 8080}
      tcpSocket: {port: 8080}`, []string{`spec.deployment.healthCheck: set only one of httpGet, tcpSocket or exec`, `spec.deployment.healthCheck.httpGet.path: "health" must start with /`}},
	{"negative period", `      periodSeconds: -5`, []string{`spec.deployment.healthCheck.periodSeconds: -5 must not be negative`}},
	{"metrics port", `  monitoring: {metrics: {port: 0, path: /metrics}}`, []string{`spec.monitoring.metrics.port: 0 is not a port`}},
	{"strategy", `  update: {strategy: big-bang}`, []string{`spec.update.strategy: "big-bang"`}},
	{"canary percent", `  update: {strategy: canary, canary: {percent: 150}}`, []string{`spec.update.canary.percent: 150: use 1-100`}},
	{"maxUnavailable", `  update: {strategy: rolling, maxUnavailable: "0%"}`, []string{`spec.update.maxUnavailable: "0%"`}},
	{"ports not a list", `    ports: "8080:8080"`, []string{`spec.deployment.ports: must be a list`}},
}

// editExample replaces the first line of the example that has the same key
// (text up to the first ':') and indentation as each edit line, or appends
// the edit under spec.deployment.
func editExample(t *testing.T, edit string) string {
	t.Helper()
	lines := strings.Split(string(mustReadExample(t)), "\n")
	editLines := strings.Split(edit, "\n")
	key := func(l string) string {
		k, _, _ := strings.Cut(l, ":")
		return strings.TrimPrefix(k, "      - {")
	}
	first := editLines[0]
	for i, l := range lines {
		if key(l) == key(first) {
			out := append([]string{}, lines[:i]...)
			out = append(out, editLines...)
			out = append(out, lines[i+1:]...)
			return strings.Join(out, "\n")
		}
	}
	// Not present: insert after "    type: container".
	for i, l := range lines {
		if l == "    type: container" {
			out := append([]string{}, lines[:i+1]...)
			out = append(out, editLines...)
			out = append(out, lines[i+1:]...)
			return strings.Join(out, "\n")
		}
	}
	t.Fatalf("cannot apply edit %q", edit)
	return ""
}

func TestBadManifestsRefused(t *testing.T) {
	if len(badManifests) < 15 {
		t.Fatalf("want at least 15 cases, have %d", len(badManifests))
	}
	for _, tc := range badManifests {
		t.Run(tc.name, func(t *testing.T) {
			doc := editExample(t, tc.edit)
			_, err := ParseAndValidate([]byte(doc), ValidateOptions{})
			if err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			if !errors.Is(err, ErrInvalidManifest) {
				t.Errorf("error does not wrap ErrInvalidManifest: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\ndoes not contain\n  %s", err, w)
				}
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	doc := `
apiVersion: fleetmesh.io/v1
kind: EdgeApplication
metadata: {name: x, version: "1"}
spec:
  deployment:
    type: container
    image: x:1
    ports: ["80:x", "y:80"]
    restartPolicy: never
    privileged: true
`
	_, err := ParseAndValidate([]byte(doc), ValidateOptions{})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	if len(ve.Errors) != 4 {
		t.Errorf("want 4 problems, got %d: %v", len(ve.Errors), err)
	}
	_, err = ParseAndValidate([]byte(strings.Replace(doc, `"80:x", "y:80"`, `"80:80"`, 1)), ValidateOptions{AllowPrivileged: true})
	if err == nil || strings.Contains(err.Error(), "privileged") {
		t.Errorf("AllowPrivileged: err = %v", err)
	}
}

func TestParseRejectsUnknownAndExtraDocuments(t *testing.T) {
	ex := string(mustReadExample(t))
	for name, doc := range map[string]string{
		"unknown top":    ex + "status: {}\n",
		"two documents":  ex + "---\n" + ex,
		"empty":          "  \n",
		"json unknown":   `{"apiVersion":"fleetmesh.io/v1","kind":"EdgeApplication","metadata":{"name":"a","version":"1","extra":1}}`,
		"json trailing":  `{"apiVersion":"fleetmesh.io/v1"} {}`,
		"duplicate keys": "apiVersion: a\napiVersion: b\n",
		"not a mapping":  "- a\n- b\n",
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrInvalidManifest) {
			t.Errorf("%s: %v does not wrap ErrInvalidManifest", name, err)
		}
	}
}

func TestQuantities(t *testing.T) {
	mem := map[string]int64{"64Mi": 64 << 20, "1Gi": 1 << 30, "500M": 500e6, "1.5Gi": 3 << 29, "134217728": 134217728, "1k": 1000}
	for s, want := range mem {
		if got, err := ParseMemory(s); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "64mi", "-1Gi", "1e3", "Mi", "1.2.3M", "0.5"} {
		if _, err := ParseMemory(s); err == nil {
			t.Errorf("ParseMemory(%q) accepted", s)
		}
	}
	cpu := map[string]int64{"250m": 250, "1": 1000, "0.5": 500, "2": 2000, "1.5": 1500, "100m": 100}
	for s, want := range cpu {
		if got, err := ParseCPU(s); err != nil || got != want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0.0001", "1.5m", "-1", "m", "one"} {
		if _, err := ParseCPU(s); err == nil {
			t.Errorf("ParseCPU(%q) accepted", s)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	s1 := NodeInfo{Name: "s1", Role: "sensor", Site: "a", Labels: map[string]string{"line": "3"}}
	for _, tc := range []struct {
		sel  Selector
		want bool
	}{
		{Selector{}, true},
		{Selector{Role: "sensor"}, true},
		{Selector{Role: "gateway"}, false},
		{Selector{Role: "sensor", Site: "b"}, false},
		{Selector{Labels: map[string]string{"line": "3"}}, true},
		{Selector{Labels: map[string]string{"line": "4"}}, false},
		{Selector{Labels: map[string]string{"zone": ""}}, false},
		{Selector{Nodes: []string{"s2", "s1"}}, true},
		{Selector{Role: "sensor", Nodes: []string{"s2"}}, false},
	} {
		if got := tc.sel.Matches(s1); got != tc.want {
			t.Errorf("%+v.Matches(s1) = %v, want %v", tc.sel, got, tc.want)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add(mustReadExample(f))
	f.Add([]byte(`{"apiVersion":"fleetmesh.io/v1","kind":"EdgeApplication","metadata":{"name":"a","version":"1"},"spec":{"deployment":{"type":"container","image":"a","ports":["[::1]:80:80/udp",{"containerPort":1}]}}}`))
	f.Add([]byte("spec: {deployment: {ports: [\"1:2:3:4\", \"[::1]:x\"], volumes: [\"/a:/b:ro:x\"]}}"))
	f.Add([]byte("spec: {deployment: {resources: {limits: {memory: 1.5Gi, cpu: 0.001}}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		if m.Validate(ValidateOptions{}) != nil {
			return
		}
		// A valid manifest survives the JSON round trip the LastApplied
		// store makes, and stays valid.
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseAndValidate(b, ValidateOptions{})
		if err != nil {
			t.Fatalf("valid manifest does not survive JSON: %v\n%s", err, b)
		}
		if _, err := Resolve(m2, NodeInfo{Name: "n", Role: "sensor"}); err != nil {
			t.Fatalf("valid manifest does not resolve: %v", err)
		}
	})
}
