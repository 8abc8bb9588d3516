package apps

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// PortSpec publishes a container port. Short forms, as in Docker:
// "8080" (container port only, not published on the host),
// "1883:1883" (host:container), "127.0.0.1:8080:80/tcp" and
// "[::1]:8080:80/udp". The long form is a mapping of the fields below.
type PortSpec struct {
	ContainerPort int `yaml:"containerPort" json:"containerPort"`
	// HostPort is the port on the device; 0 leaves the port unpublished.
	HostPort int `yaml:"hostPort,omitempty" json:"hostPort,omitempty"`
	// Protocol is tcp (the default) or udp.
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// HostIP is the device address to bind; empty means all addresses.
	HostIP string `yaml:"hostIP,omitempty" json:"hostIP,omitempty"`

	short    string // the short form as written, for error messages
	shortErr string // why the short form did not parse
}

type portLong PortSpec

// UnmarshalYAML accepts the short and the long form.
func (p *PortSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*p = parsePortShort(n.Value)
		return nil
	}
	var l portLong
	if err := n.Decode(&l); err != nil {
		return err
	}
	*p = PortSpec(l)
	return nil
}

// UnmarshalJSON accepts the short and the long form.
func (p *PortSpec) UnmarshalJSON(b []byte) error {
	if s, ok, err := jsonScalar(b); ok {
		if err != nil {
			return err
		}
		*p = parsePortShort(s)
		return nil
	}
	var l portLong
	if err := strictJSON(b, &l); err != nil {
		return err
	}
	*p = PortSpec(l)
	return nil
}

// MarshalYAML writes the long form.
func (p PortSpec) MarshalYAML() (any, error) { return portLong(p), nil }

// MarshalJSON writes the long form.
func (p PortSpec) MarshalJSON() ([]byte, error) { return json.Marshal(portLong(p)) }

// String is the short form.
func (p PortSpec) String() string {
	if p.short != "" {
		return p.short
	}
	var b strings.Builder
	if p.HostIP != "" {
		if strings.Contains(p.HostIP, ":") {
			b.WriteString("[" + p.HostIP + "]:")
		} else {
			b.WriteString(p.HostIP + ":")
		}
	}
	if p.HostPort != 0 {
		b.WriteString(strconv.Itoa(p.HostPort) + ":")
	}
	b.WriteString(strconv.Itoa(p.ContainerPort))
	if p.Protocol != "" && p.Protocol != "tcp" {
		b.WriteString("/" + p.Protocol)
	}
	return b.String()
}

func parsePortShort(s string) PortSpec {
	p := PortSpec{short: s}
	fail := func(msg string) PortSpec { p.shortErr = msg; return p }
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		p.Protocol = rest[i+1:]
		rest = rest[:i]
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return fail("host IP in brackets must be followed by \":port\"")
		}
		p.HostIP = rest[1:end]
		rest = rest[end+2:]
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return fail("host IP " + strconv.Quote(p.HostIP) + " is not an IP address")
		}
		if strings.Count(rest, ":") != 1 {
			return fail("want [hostIP]:hostPort:containerPort")
		}
	}
	parts := strings.Split(rest, ":")
	var hostPort, ctrPort string
	switch len(parts) {
	case 1:
		ctrPort = parts[0]
	case 2:
		hostPort, ctrPort = parts[0], parts[1]
	case 3:
		if p.HostIP != "" {
			return fail("want [hostIP]:hostPort:containerPort")
		}
		p.HostIP = parts[0]
		if _, err := netip.ParseAddr(p.HostIP); err != nil {
			return fail("host IP " + strconv.Quote(p.HostIP) + " is not an IP address")
		}
		hostPort, ctrPort = parts[1], parts[2]
	default:
		return fail("want [hostIP:]hostPort:containerPort[/protocol] (put an IPv6 host IP in brackets)")
	}
	if strings.Contains(hostPort, "-") || strings.Contains(ctrPort, "-") {
		return fail("port ranges are not supported; list each port")
	}
	var err error
	if p.ContainerPort, err = strconv.Atoi(ctrPort); err != nil {
		return fail("container port is not a number")
	}
	if hostPort != "" {
		if p.HostPort, err = strconv.Atoi(hostPort); err != nil {
			return fail("host port is not a number")
		}
		if p.HostPort == 0 {
			return fail("host port must be 1-65535 (leave it out to not publish the port)")
		}
	}
	return p
}

// VolumeSpec bind-mounts a device directory into the application. Short
// form "/host:/container" or "/host:/container:ro"; long form a mapping of
// the fields below. Named volumes are not supported: state on an edge
// device lives at a path the operator can see and back up.
type VolumeSpec struct {
	HostPath      string `yaml:"hostPath" json:"hostPath"`
	ContainerPath string `yaml:"containerPath" json:"containerPath"`
	ReadOnly      bool   `yaml:"readOnly,omitempty" json:"readOnly,omitempty"`

	short    string
	shortErr string
}

type volumeLong VolumeSpec

// UnmarshalYAML accepts the short and the long form.
func (v *VolumeSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*v = parseVolumeShort(n.Value)
		return nil
	}
	var l volumeLong
	if err := n.Decode(&l); err != nil {
		return err
	}
	*v = VolumeSpec(l)
	return nil
}

// UnmarshalJSON accepts the short and the long form.
func (v *VolumeSpec) UnmarshalJSON(b []byte) error {
	if s, ok, err := jsonScalar(b); ok {
		if err != nil {
			return err
		}
		*v = parseVolumeShort(s)
		return nil
	}
	var l volumeLong
	if err := strictJSON(b, &l); err != nil {
		return err
	}
	*v = VolumeSpec(l)
	return nil
}

// MarshalYAML writes the long form.
func (v VolumeSpec) MarshalYAML() (any, error) { return volumeLong(v), nil }

// MarshalJSON writes the long form.
func (v VolumeSpec) MarshalJSON() ([]byte, error) { return json.Marshal(volumeLong(v)) }

// String is the short form.
func (v VolumeSpec) String() string {
	if v.short != "" {
		return v.short
	}
	s := v.HostPath + ":" + v.ContainerPath
	if v.ReadOnly {
		s += ":ro"
	}
	return s
}

func parseVolumeShort(s string) VolumeSpec {
	v := VolumeSpec{short: s}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
	case 3:
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			v.shortErr = fmt.Sprintf("mode %q is not ro or rw", parts[2])
			return v
		}
	default:
		v.shortErr = "want /host/path:/container/path[:ro]"
		return v
	}
	v.HostPath, v.ContainerPath = parts[0], parts[1]
	return v
}

// jsonScalar reports whether b is a JSON scalar and returns it as a string.
func jsonScalar(b []byte) (string, bool, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] == '{' || b[0] == '[' {
		return "", false, nil
	}
	if b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, true, err
	}
	return string(b), true, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
