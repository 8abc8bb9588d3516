package apps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// APIVersion and Kind are the only values a manifest's header may carry.
const (
	APIVersion = "fleetmesh.io/v1"
	Kind       = "EdgeApplication"
)

// DeploymentType says which driver runs an application.
type DeploymentType string

// The deployment types.
const (
	TypeContainer  DeploymentType = "container"
	TypeSnap       DeploymentType = "snap"
	TypeSystemd    DeploymentType = "systemd"
	TypeKubernetes DeploymentType = "kubernetes"
)

// Manifest is one EdgeApplication: what to run and on which devices. It is
// the unit the spec stores and the reconciler converges to. Build one with
// Parse or ParseFile, then call Validate.
type Manifest struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       AppSpec  `yaml:"spec" json:"spec"`
}

// Metadata names an application and the version of it a manifest describes.
type Metadata struct {
	Name    string `yaml:"name" json:"name"`
	Version string `yaml:"version" json:"version"`
}

// AppSpec is a manifest's spec block.
type AppSpec struct {
	Selector   Selector        `yaml:"selector" json:"selector"`
	Deployment Deployment      `yaml:"deployment" json:"deployment"`
	Monitoring *Monitoring     `yaml:"monitoring,omitempty" json:"monitoring,omitempty"`
	Update     *UpdateStrategy `yaml:"update,omitempty" json:"update,omitempty"`
}

// Deployment says how to run the application on a device.
type Deployment struct {
	Type DeploymentType `yaml:"type" json:"type"`
	// Image is the container image for container and kubernetes, and the
	// snap's name for snap.
	Image string `yaml:"image,omitempty" json:"image,omitempty"`
	// ImagePullPolicy is Always, IfNotPresent or Never (container only).
	// Unset: Always for an untagged or :latest image, else IfNotPresent —
	// Kubernetes' rule, which also keeps a cut-off site from waiting on a
	// registry for an image it already has.
	ImagePullPolicy string `yaml:"imagePullPolicy,omitempty" json:"imagePullPolicy,omitempty"`
	// Channel is the snap channel (snap only), e.g. "latest/stable".
	Channel string `yaml:"channel,omitempty" json:"channel,omitempty"`
	// Command replaces the image's entrypoint; for systemd it is the program
	// to run (an absolute path) and is required.
	Command       []string     `yaml:"command,omitempty" json:"command,omitempty"`
	Args          []string     `yaml:"args,omitempty" json:"args,omitempty"`
	Ports         []PortSpec   `yaml:"ports,omitempty" json:"ports,omitempty"`
	Volumes       []VolumeSpec `yaml:"volumes,omitempty" json:"volumes,omitempty"`
	Env           []EnvVar     `yaml:"env,omitempty" json:"env,omitempty"`
	Resources     *Resources   `yaml:"resources,omitempty" json:"resources,omitempty"`
	RestartPolicy string       `yaml:"restartPolicy,omitempty" json:"restartPolicy,omitempty"`
	Privileged    bool         `yaml:"privileged,omitempty" json:"privileged,omitempty"`
	HealthCheck   *HealthCheck `yaml:"healthCheck,omitempty" json:"healthCheck,omitempty"`
}

// EnvVar is one environment variable: a literal Value, or a value taken from
// the device the application runs on.
type EnvVar struct {
	Name      string        `yaml:"name" json:"name"`
	Value     string        `yaml:"value,omitempty" json:"value,omitempty"`
	ValueFrom *EnvVarSource `yaml:"valueFrom,omitempty" json:"valueFrom,omitempty"`
}

// EnvVarSource is where a device-specific value comes from.
type EnvVarSource struct {
	FieldRef *FieldRef `yaml:"fieldRef" json:"fieldRef"`
}

// FieldRef names a field of the device: metadata.name, metadata.role,
// metadata.site or metadata.labels['key'].
type FieldRef struct {
	FieldPath string `yaml:"fieldPath" json:"fieldPath"`
}

// Resources holds requests (what the app is guaranteed) and limits (what it
// may not exceed).
type Resources struct {
	Requests *ResourceList `yaml:"requests,omitempty" json:"requests,omitempty"`
	Limits   *ResourceList `yaml:"limits,omitempty" json:"limits,omitempty"`
}

// ResourceList is memory (64Mi, 1Gi, 500M, bytes) and cpu (250m, "1", 0.5),
// kept as written; ParseMemory and ParseCPU read them.
type ResourceList struct {
	Memory string `yaml:"memory,omitempty" json:"memory,omitempty"`
	CPU    string `yaml:"cpu,omitempty" json:"cpu,omitempty"`
}

// HealthCheck is a probe the agent runs against the application. Exactly one
// of HTTPGet, TCPSocket and Exec is set. Zero durations take the defaults
// (period 10 s, timeout 1 s, failure threshold 3).
type HealthCheck struct {
	HTTPGet             *HTTPGetAction   `yaml:"httpGet,omitempty" json:"httpGet,omitempty"`
	TCPSocket           *TCPSocketAction `yaml:"tcpSocket,omitempty" json:"tcpSocket,omitempty"`
	Exec                *ExecAction      `yaml:"exec,omitempty" json:"exec,omitempty"`
	InitialDelaySeconds int              `yaml:"initialDelaySeconds,omitempty" json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int              `yaml:"periodSeconds,omitempty" json:"periodSeconds,omitempty"`
	TimeoutSeconds      int              `yaml:"timeoutSeconds,omitempty" json:"timeoutSeconds,omitempty"`
	FailureThreshold    int              `yaml:"failureThreshold,omitempty" json:"failureThreshold,omitempty"`
}

// HTTPGetAction probes GET path on a container port; 2xx and 3xx are healthy.
type HTTPGetAction struct {
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	Port int    `yaml:"port" json:"port"`
}

// TCPSocketAction probes that a container port accepts connections.
type TCPSocketAction struct {
	Port int `yaml:"port" json:"port"`
}

// ExecAction runs a command inside the application; exit status 0 is healthy.
type ExecAction struct {
	Command []string `yaml:"command" json:"command"`
}

// Monitoring says where the application serves its metrics.
type Monitoring struct {
	Metrics *MetricsEndpoint `yaml:"metrics,omitempty" json:"metrics,omitempty"`
}

// MetricsEndpoint is a Prometheus scrape target inside the application.
type MetricsEndpoint struct {
	Port int    `yaml:"port" json:"port"`
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
}

// UpdateStrategy is how a new version rolls out across the fleet. The
// device-side reconciler only stores and validates it; the rollout
// controller acts on it.
type UpdateStrategy struct {
	// Strategy is rolling (the default), canary or blue-green.
	Strategy string `yaml:"strategy,omitempty" json:"strategy,omitempty"`
	// MaxUnavailable is a count ("2") or a percentage ("25%") of matching
	// devices that may be updating at once (rolling).
	MaxUnavailable string `yaml:"maxUnavailable,omitempty" json:"maxUnavailable,omitempty"`
	// MinHealthySeconds is how long a device must report healthy before the
	// rollout counts it as done.
	MinHealthySeconds int `yaml:"minHealthySeconds,omitempty" json:"minHealthySeconds,omitempty"`
	// Canary is the first wave of a canary rollout.
	Canary *CanaryStrategy `yaml:"canary,omitempty" json:"canary,omitempty"`
	// AutoRollback rolls back when a wave fails its health checks.
	AutoRollback *bool `yaml:"autoRollback,omitempty" json:"autoRollback,omitempty"`
}

// CanaryStrategy is the share of devices that get a new version first.
type CanaryStrategy struct {
	Percent      int `yaml:"percent" json:"percent"`
	PauseSeconds int `yaml:"pauseSeconds,omitempty" json:"pauseSeconds,omitempty"`
}

// Parse reads one manifest in YAML or JSON. Parsing is strict: unknown
// fields, duplicate keys, a second document and values of the wrong type are
// errors. Parse does not Validate.
func Parse(data []byte) (*Manifest, error) {
	root, err := parseNode(data)
	if err != nil {
		return nil, err
	}
	var errs FieldErrors
	checkKnownFields(root, typeOfManifest, "", &errs)
	if len(errs) > 0 {
		return nil, &ValidationError{Errors: errs}
	}
	var m Manifest
	if err := root.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, cleanYAMLError(err))
	}
	return &m, nil
}

// ParseFile reads a manifest from path ("-" is standard input).
func ParseFile(path string) (*Manifest, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ParseAndValidate is what `apps deploy -f` and POST /v1/apps call: Parse,
// then Validate with opts.
func ParseAndValidate(data []byte, opts ValidateOptions) (*Manifest, error) {
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if err := m.Validate(opts); err != nil {
		return nil, err
	}
	return m, nil
}

// parseNode turns YAML or JSON into a yaml.Node document root. JSON is read
// with encoding/json (YAML rejects the tab indentation JSON tools emit) and
// converted, so both go through the same strict field checks.
func parseNode(data []byte) (*yaml.Node, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty manifest", ErrInvalidManifest)
	}
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: json: %v", ErrInvalidManifest, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: json: unexpected data after the manifest", ErrInvalidManifest)
		}
		var n yaml.Node
		if err := n.Encode(jsonToYAMLValue(v)); err != nil {
			return nil, fmt.Errorf("%w: json: %v", ErrInvalidManifest, err)
		}
		return &n, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty manifest", ErrInvalidManifest)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, cleanYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document; deploy one application per file", ErrInvalidManifest)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

// jsonToYAMLValue turns json.Numbers into ints or floats so the YAML encoder
// tags them as numbers, not strings.
func jsonToYAMLValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = jsonToYAMLValue(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = jsonToYAMLValue(e)
		}
		return v
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			return f
		}
		return string(v)
	default:
		return v
	}
}

// cleanYAMLError drops yaml.v3's "yaml: unmarshal errors:" preamble.
func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimPrefix(s, "yaml: ")
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// Clone returns a deep copy of m.
func (m *Manifest) Clone() *Manifest {
	data, err := json.Marshal(m)
	if err != nil {
		panic("apps: manifest does not marshal: " + err.Error())
	}
	var c Manifest
	if err := json.Unmarshal(data, &c); err != nil {
		panic("apps: manifest does not unmarshal: " + err.Error())
	}
	return &c
}
