package hardening

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// APIVersion and Kind identify a SecurityPolicy document.
const (
	APIVersion = "fleetmesh.io/v1"
	Kind       = "SecurityPolicy"
)

// maxPolicySize bounds what ParsePolicy reads; a real policy is a few KB.
const maxPolicySize = 1 << 20

// Errors returned by this package; match them with errors.Is.
var (
	// ErrInvalidPolicy is wrapped by every error that refuses a policy.
	ErrInvalidPolicy = errors.New("invalid security policy")
	// ErrNothingToUndo is returned by Undo when no apply left a backup.
	ErrNothingToUndo = errors.New("nothing to undo: no hardening backup found")
	// ErrBusy is returned when another apply or undo holds the root's lock.
	ErrBusy = errors.New("another hardening apply or undo is running on this root; try again when it is done")
)

// Policy is a SecurityPolicy document. Sections that are absent (nil
// pointers, empty maps and lists) are neither checked nor applied: a policy
// only constrains what it states.
type Policy struct {
	APIVersion string   `yaml:"apiVersion" json:"apiVersion"`
	Kind       string   `yaml:"kind" json:"kind"`
	Metadata   Metadata `yaml:"metadata" json:"metadata"`
	Spec       Spec     `yaml:"spec" json:"spec"`
}

// Metadata names a policy.
type Metadata struct {
	Name string `yaml:"name" json:"name"`
}

// Spec is the body of a SecurityPolicy.
type Spec struct {
	OS         OSSpec         `yaml:"os" json:"os"`
	Network    NetworkSpec    `yaml:"network" json:"network"`
	Intrusion  IntrusionSpec  `yaml:"intrusion" json:"intrusion"`
	Updates    *UpdatesSpec   `yaml:"updates" json:"updates,omitempty"`
	Audit      *AuditSpec     `yaml:"audit" json:"audit,omitempty"`
	Data       DataSpec       `yaml:"data" json:"data"`
	Containers ContainersSpec `yaml:"containers" json:"containers"`
}

// OSSpec covers services, kernel parameters, file modes and sshd.
type OSSpec struct {
	// DisableServices are systemd units to disable and mask; a name without
	// a suffix means NAME.service.
	DisableServices []string `yaml:"disableServices" json:"disableServices,omitempty"`
	// Sysctl maps kernel parameters (dotted form) to their wanted value.
	Sysctl map[string]string `yaml:"sysctl" json:"sysctl,omitempty"`
	// FilePermissions maps absolute paths to octal modes such as "0640".
	FilePermissions map[string]string `yaml:"filePermissions" json:"filePermissions,omitempty"`
	SSH             *SSHSpec          `yaml:"ssh" json:"ssh,omitempty"`
}

// SSHSpec holds the sshd settings a policy enforces; empty fields are not
// enforced.
type SSHSpec struct {
	PermitRootLogin              string `yaml:"permitRootLogin" json:"permitRootLogin,omitempty"`
	PasswordAuthentication       string `yaml:"passwordAuthentication" json:"passwordAuthentication,omitempty"`
	KbdInteractiveAuthentication string `yaml:"kbdInteractiveAuthentication" json:"kbdInteractiveAuthentication,omitempty"`
	X11Forwarding                string `yaml:"x11Forwarding" json:"x11Forwarding,omitempty"`
	MaxAuthTries                 *int   `yaml:"maxAuthTries" json:"maxAuthTries,omitempty"`
}

// NetworkSpec holds the host firewall.
type NetworkSpec struct {
	Firewall *FirewallSpec `yaml:"firewall" json:"firewall,omitempty"`
}

// FirewallSpec is rendered as the nftables table "inet fleetmesh".
type FirewallSpec struct {
	// DefaultPolicy of the input chain: "drop" (the default) or "accept".
	DefaultPolicy string         `yaml:"defaultPolicy" json:"defaultPolicy,omitempty"`
	Rules         []FirewallRule `yaml:"rules" json:"rules,omitempty"`
}

// FirewallRule accepts inbound traffic to one port.
type FirewallRule struct {
	Name     string `yaml:"name" json:"name"`
	Port     int    `yaml:"port" json:"port"`
	Protocol string `yaml:"protocol" json:"protocol,omitempty"` // tcp (default) or udp
	Source   string `yaml:"source" json:"source,omitempty"`     // CIDR or address; empty means any
}

// IntrusionSpec holds intrusion prevention settings.
type IntrusionSpec struct {
	Fail2ban *Fail2banSpec `yaml:"fail2ban" json:"fail2ban,omitempty"`
}

// Fail2banSpec holds the fail2ban jails a policy manages.
type Fail2banSpec struct {
	SSHD *JailSpec `yaml:"sshd" json:"sshd,omitempty"`
}

// JailSpec is one fail2ban jail; times are in seconds, bantime -1 bans forever.
type JailSpec struct {
	Bantime  int `yaml:"bantime" json:"bantime"`
	Findtime int `yaml:"findtime" json:"findtime"`
	Maxretry int `yaml:"maxretry" json:"maxretry"`
}

// UpdatesSpec configures unattended-upgrades.
type UpdatesSpec struct {
	Unattended   *bool  `yaml:"unattended" json:"unattended,omitempty"`
	SecurityOnly bool   `yaml:"securityOnly" json:"securityOnly,omitempty"`
	RebootTime   string `yaml:"rebootTime" json:"rebootTime,omitempty"` // HH:MM; empty means never reboot automatically
}

// AuditSpec lists auditctl rules (-w and -a/-A forms only).
type AuditSpec struct {
	Rules []string `yaml:"rules" json:"rules,omitempty"`
}

// DataSpec is checked and reported, never applied.
type DataSpec struct {
	RequireEncryptedRoot *bool `yaml:"requireEncryptedRoot" json:"requireEncryptedRoot,omitempty"`
}

// ContainersSpec is obeyed by the apps reconciler, not by this package.
type ContainersSpec struct {
	AllowPrivileged *bool `yaml:"allowPrivileged" json:"allowPrivileged,omitempty"`
}

// AllowPrivilegedContainers reports whether the apps reconciler may run
// privileged containers under p. A nil policy, or one that does not set
// spec.containers.allowPrivileged, does not restrict them.
func (p *Policy) AllowPrivilegedContainers() bool {
	if p == nil || p.Spec.Containers.AllowPrivileged == nil {
		return true
	}
	return *p.Spec.Containers.AllowPrivileged
}

// LoadPolicy reads and parses the policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy decodes one SecurityPolicy YAML document and validates it.
// Unknown keys, wrongly typed values and invalid settings are refused with
// errors that name the field path; such errors wrap ErrInvalidPolicy.
func ParsePolicy(data []byte) (*Policy, error) {
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidPolicy, maxPolicySize)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrInvalidPolicy)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: want exactly one YAML document", ErrInvalidPolicy)
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%w: empty document", ErrInvalidPolicy)
	}
	var errs fieldErrors
	checkShape(doc.Content[0], reflect.TypeOf(Policy{}), "", &errs, 0)
	if len(errs) > 0 {
		return nil, errs.err()
	}
	// The shape check above names paths; KnownFields is the belt to its braces.
	var p Policy
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// FieldError is one problem in a policy, located by its field path.
type FieldError struct {
	Path  string // e.g. spec.network.firewall.rules[1].source
	Value string // the offending value, if any
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("%s: %q: %s", e.Path, e.Value, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// PolicyError lists every problem found in a policy. It wraps
// ErrInvalidPolicy.
type PolicyError struct {
	Fields []*FieldError
}

func (e *PolicyError) Error() string {
	const show = 10 // a garbage file should not produce a page of errors
	var parts []string
	for i, f := range e.Fields {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(e.Fields)-show))
			break
		}
		parts = append(parts, f.Error())
	}
	return ErrInvalidPolicy.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalidPolicy) hold.
func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }

type fieldErrors []*FieldError

func (f *fieldErrors) add(path, value, format string, args ...any) {
	*f = append(*f, &FieldError{Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &PolicyError{Fields: f}
}

func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// checkShape walks a YAML node against the Go type it will decode into and
// reports unknown keys and mistyped values with their field paths.
func checkShape(n *yaml.Node, t reflect.Type, path string, errs *fieldErrors, depth int) {
	if depth > 32 {
		errs.add(path, "", "nested too deeply")
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			checkShape(n.Content[0], t, path, errs, depth+1)
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // unset
	}
	where := path
	if where == "" {
		where = "(document)"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			errs.add(where, "", "want a mapping (line %d)", n.Line)
			return
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				errs.add(joinPath(path, k.Value), "", "unknown field (line %d)", k.Line)
				continue
			}
			checkShape(v, f.Type, joinPath(path, k.Value), errs, depth+1)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			errs.add(where, "", "want a mapping (line %d)", n.Line)
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				errs.add(where, "", "keys must be strings (line %d)", k.Line)
				continue
			}
			checkShape(v, t.Elem(), fmt.Sprintf("%s[%s]", path, k.Value), errs, depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errs.add(where, "", "want a list (line %d)", n.Line)
			return
		}
		for i, v := range n.Content {
			checkShape(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs, depth+1)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			errs.add(where, "", "want a string (line %d)", n.Line)
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			errs.add(where, n.Value, "want an integer (line %d)", n.Line)
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			errs.add(where, n.Value, "want true or false (line %d)", n.Line)
		}
	}
}
