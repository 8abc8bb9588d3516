package apps

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Instance is a manifest resolved for one device: defaults applied,
// quantities parsed, env valueFrom replaced by the device's values. It is
// what a Driver runs. Hash identifies everything a driver would have to
// recreate the application for; a change of Hash means replace.
type Instance struct {
	App     string         `json:"app"`
	Version string         `json:"version"`
	Type    DeploymentType `json:"type"`
	// Image is the container image, or the snap's name.
	Image   string   `json:"image,omitempty"`
	Channel string   `json:"channel,omitempty"`
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	// Ports have Protocol set (tcp or udp).
	Ports   []PortSpec   `json:"ports,omitempty"`
	Volumes []VolumeSpec `json:"volumes,omitempty"`
	// Env is in manifest order, every value resolved.
	Env []EnvPair `json:"env,omitempty"`
	// MemoryLimit and MemoryRequest are bytes; 0 means none.
	MemoryLimit   int64 `json:"memoryLimit,omitempty"`
	MemoryRequest int64 `json:"memoryRequest,omitempty"`
	// CPULimit and CPURequest are millicores; 0 means none.
	CPULimit      int64  `json:"cpuLimit,omitempty"`
	CPURequest    int64  `json:"cpuRequest,omitempty"`
	RestartPolicy string `json:"restartPolicy"`
	Privileged    bool   `json:"privileged,omitempty"`

	// PullPolicy is resolved: Always, IfNotPresent or Never. It is not part
	// of Hash: changing it does not restart the application.
	PullPolicy string `json:"-"`

	// HealthCheck is run by the agent, not by the driver, so it is not part
	// of Hash: changing a probe does not restart the application.
	HealthCheck *HealthCheck `json:"-"`
	// Hash is SpecHash of the fields above.
	Hash string `json:"-"`
}

// EnvPair is one resolved environment variable.
type EnvPair struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// DefaultRestartPolicy applies when a manifest sets none: an edge device
// must bring its applications back after a crash or a reboot even before
// the agent runs.
const DefaultRestartPolicy = RestartUnlessStopped

// Resolve makes the Instance of a valid manifest m for device n. It does not
// check the selector; the caller decides whether m applies to n.
func Resolve(m *Manifest, n NodeInfo) (Instance, error) {
	d := m.Spec.Deployment
	inst := Instance{
		App:           m.Metadata.Name,
		Version:       m.Metadata.Version,
		Type:          d.Type,
		Image:         d.Image,
		Channel:       d.Channel,
		Command:       append([]string(nil), d.Command...),
		Args:          append([]string(nil), d.Args...),
		RestartPolicy: d.RestartPolicy,
		Privileged:    d.Privileged,
	}
	if inst.RestartPolicy == "" {
		inst.RestartPolicy = DefaultRestartPolicy
	}
	inst.PullPolicy = d.ImagePullPolicy
	if inst.PullPolicy == "" && d.Type == TypeContainer {
		inst.PullPolicy = defaultPullPolicy(d.Image)
	}
	for _, p := range d.Ports {
		p.short, p.shortErr = "", ""
		p.Protocol = protocolOf(p)
		inst.Ports = append(inst.Ports, p)
	}
	for _, v := range d.Volumes {
		v.short, v.shortErr = "", ""
		inst.Volumes = append(inst.Volumes, v)
	}
	for _, e := range d.Env {
		val := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			var err error
			if val, err = fieldValue(e.ValueFrom.FieldRef.FieldPath, n); err != nil {
				return Instance{}, fmt.Errorf("%w: env %s: %v", ErrInvalidManifest, e.Name, err)
			}
		}
		inst.Env = append(inst.Env, EnvPair{Name: e.Name, Value: val})
	}
	if r := d.Resources; r != nil {
		var err error
		parse := func(rl *ResourceList, mem, cpu *int64) {
			if rl == nil || err != nil {
				return
			}
			if rl.Memory != "" {
				if *mem, err = ParseMemory(rl.Memory); err != nil {
					return
				}
			}
			if rl.CPU != "" {
				*cpu, err = ParseCPU(rl.CPU)
			}
		}
		parse(r.Requests, &inst.MemoryRequest, &inst.CPURequest)
		parse(r.Limits, &inst.MemoryLimit, &inst.CPULimit)
		if err != nil {
			return Instance{}, fmt.Errorf("%w: resources: %v", ErrInvalidManifest, err)
		}
	}
	if d.HealthCheck != nil {
		hc := *d.HealthCheck
		inst.HealthCheck = &hc
	}
	inst.Hash = inst.SpecHash()
	return inst, nil
}

func fieldValue(fieldPath string, n NodeInfo) (string, error) {
	switch fieldPath {
	case "metadata.name":
		return n.Name, nil
	case "metadata.role":
		return n.Role, nil
	case "metadata.site":
		return n.Site, nil
	}
	if m := labelRefRE.FindStringSubmatch(fieldPath); m != nil {
		// A label the device does not have resolves to "", as in the
		// Kubernetes downward API.
		return n.Labels[m[1]], nil
	}
	return "", fmt.Errorf("unknown fieldPath %q", fieldPath)
}

// SpecHash is the hex SHA-256 of the instance's canonical JSON form, minus
// the health check and the hash itself.
func (inst Instance) SpecHash() string {
	b, err := json.Marshal(inst)
	if err != nil {
		panic("apps: instance does not marshal: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Key identifies an instance across drivers.
func (inst Instance) Key() InstanceKey { return InstanceKey{Type: inst.Type, App: inst.App} }

// InstanceKey names an application under one driver.
type InstanceKey struct {
	Type DeploymentType
	App  string
}

// Image pull policies.
const (
	PullAlways       = "Always"
	PullIfNotPresent = "IfNotPresent"
	PullNever        = "Never"
)

// defaultPullPolicy is Always for an untagged or :latest image (the name
// promises the newest), IfNotPresent for anything pinned.
func defaultPullPolicy(image string) string {
	ref := image
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return PullIfNotPresent // pinned by digest
	}
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	tag := ""
	if i := strings.LastIndex(ref, ":"); i >= 0 {
		tag = ref[i+1:]
	}
	if tag == "" || tag == "latest" {
		return PullAlways
	}
	return PullIfNotPresent
}
