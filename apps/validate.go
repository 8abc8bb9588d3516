package apps

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// ValidateOptions carries the fleet policy a manifest is checked against.
type ValidateOptions struct {
	// AllowPrivileged lets manifests ask for privileged containers.
	AllowPrivileged bool
}

// Restart policies.
const (
	RestartNo            = "no"
	RestartAlways        = "always"
	RestartOnFailure     = "on-failure"
	RestartUnlessStopped = "unless-stopped"
)

// Update strategies.
const (
	StrategyRolling   = "rolling"
	StrategyCanary    = "canary"
	StrategyBlueGreen = "blue-green"
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	versionRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	snapNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	labelRefRE = regexp.MustCompile(`^metadata\.labels\['([^']+)'\]$`)
	siteRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
)

// Validate checks m against the schema and the fleet policy in opts. It
// returns nil or a *ValidationError listing every problem found, each named
// by its field path.
func (m *Manifest) Validate(opts ValidateOptions) error {
	var errs FieldErrors
	m.validate(opts, &errs)
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Name: m.Metadata.Name, Errors: errs}
}

func (m *Manifest) validate(opts ValidateOptions, errs *FieldErrors) {
	switch m.APIVersion {
	case APIVersion:
	case "":
		errs.add("apiVersion", "required; set it to %q", APIVersion)
	default:
		errs.add("apiVersion", "%q is not supported; use %q", m.APIVersion, APIVersion)
	}
	switch m.Kind {
	case Kind:
	case "":
		errs.add("kind", "required; set it to %q", Kind)
	default:
		errs.add("kind", "%q is not supported; use %q", m.Kind, Kind)
	}
	validateName("metadata.name", m.Metadata.Name, errs)
	switch v := m.Metadata.Version; {
	case v == "":
		errs.add("metadata.version", "required (e.g. \"1.4.0\")")
	case len(v) > 128 || !versionRE.MatchString(v):
		errs.add("metadata.version", "%q: use letters, digits and . _ + - (at most 128), starting with a letter or digit", v)
	}
	m.Spec.Selector.validate("spec.selector", errs)
	m.Spec.Deployment.validate("spec.deployment", opts, errs)
	if mon := m.Spec.Monitoring; mon != nil && mon.Metrics != nil {
		validatePort("spec.monitoring.metrics.port", mon.Metrics.Port, errs)
		validateHTTPPath("spec.monitoring.metrics.path", mon.Metrics.Path, errs)
	}
	if u := m.Spec.Update; u != nil {
		u.validate("spec.update", errs)
	}
}

func validateName(field, name string, errs *FieldErrors) {
	switch {
	case name == "":
		errs.add(field, "required")
	case len(name) > 63 || !nameRE.MatchString(name):
		errs.add(field, "%q: use lower-case letters, digits and '-' (at most 63), starting and ending with a letter or digit", name)
	}
}

func (s *Selector) validate(field string, errs *FieldErrors) {
	if s.Role != "" && !slices.Contains(Roles, s.Role) {
		errs.add(field+".role", "%q is not a role; use one of %s", s.Role, strings.Join(Roles, ", "))
	}
	if s.Site != "" && !siteRE.MatchString(s.Site) {
		errs.add(field+".site", "%q is not a site name", s.Site)
	}
	for _, k := range sortedKeys(s.Labels) {
		if len(k) > 253 || !labelKeyRE.MatchString(k) {
			errs.add(field+".labels", "key %q: use letters, digits and . _ / -", k)
		}
	}
	seen := map[string]bool{}
	for i, n := range s.Nodes {
		f := fmt.Sprintf("%s.nodes[%d]", field, i)
		switch {
		case n == "":
			errs.add(f, "empty node name")
		case seen[n]:
			errs.add(f, "%q is listed twice", n)
		}
		seen[n] = true
	}
}

func (d *Deployment) validate(field string, opts ValidateOptions, errs *FieldErrors) {
	f := func(name string) string { return field + "." + name }
	notFor := func(name string, set bool) {
		if set {
			errs.add(f(name), "not supported for type %s", d.Type)
		}
	}
	switch d.Type {
	case TypeContainer, TypeKubernetes:
		switch {
		case d.Image == "":
			errs.add(f("image"), "required for type %s", d.Type)
		default:
			if _, err := reference.ParseNormalizedNamed(d.Image); err != nil {
				errs.add(f("image"), "%q is not an image reference: %v", d.Image, err)
			}
		}
		notFor("channel", d.Channel != "")
	case TypeSnap:
		switch {
		case d.Image == "":
			errs.add(f("image"), "required for type snap: the snap's name")
		case len(d.Image) > 40 || !snapNameRE.MatchString(d.Image):
			errs.add(f("image"), "%q is not a snap name", d.Image)
		}
		if d.Channel != "" {
			validateChannel(f("channel"), d.Channel, errs)
		}
		notFor("command", len(d.Command) > 0)
		notFor("args", len(d.Args) > 0)
		notFor("volumes", len(d.Volumes) > 0)
		notFor("env", len(d.Env) > 0)
		notFor("resources", d.Resources != nil)
		notFor("restartPolicy", d.RestartPolicy != "")
	case TypeSystemd:
		if len(d.Command) == 0 {
			errs.add(f("command"), "required for type systemd: the program to run")
		} else if !path.IsAbs(d.Command[0]) {
			errs.add(f("command[0]"), "%q: the program must be an absolute path", d.Command[0])
		}
		notFor("image", d.Image != "")
		notFor("channel", d.Channel != "")
		notFor("volumes", len(d.Volumes) > 0)
	case "":
		errs.add(f("type"), "required; one of container, snap, systemd, kubernetes")
	default:
		errs.add(f("type"), "%q is not a deployment type; use container, snap, systemd or kubernetes", d.Type)
	}
	for i, c := range d.Command {
		switch {
		case i == 0 && c == "":
			errs.add(f("command[0]"), "empty program")
		case strings.ContainsRune(c, 0):
			errs.add(fmt.Sprintf("%s[%d]", f("command"), i), "contains NUL")
		}
	}
	for i, a := range d.Args {
		if strings.ContainsRune(a, 0) {
			errs.add(fmt.Sprintf("%s[%d]", f("args"), i), "contains NUL")
		}
	}
	validatePorts(f("ports"), d.Ports, errs)
	validateVolumes(f("volumes"), d.Volumes, errs)
	validateEnv(f("env"), d.Env, errs)
	if d.Resources != nil {
		d.Resources.validate(f("resources"), errs)
	}
	switch d.ImagePullPolicy {
	case "", PullAlways, PullIfNotPresent, PullNever:
		if d.ImagePullPolicy != "" && d.Type != TypeContainer {
			notFor("imagePullPolicy", true)
		}
	default:
		errs.add(f("imagePullPolicy"), "%q: use Always, IfNotPresent or Never", d.ImagePullPolicy)
	}
	switch d.RestartPolicy {
	case "", RestartNo, RestartAlways, RestartOnFailure, RestartUnlessStopped:
	default:
		errs.add(f("restartPolicy"), "%q: use no, always, on-failure or unless-stopped", d.RestartPolicy)
	}
	if d.Privileged {
		switch {
		case d.Type != TypeContainer && d.Type != TypeKubernetes:
			notFor("privileged", true)
		case !opts.AllowPrivileged:
			errs.add(f("privileged"), "refused by fleet policy: privileged applications are not allowed (an operator must enable them in the fleet policy)")
		}
	}
	if d.HealthCheck != nil {
		d.HealthCheck.validate(f("healthCheck"), errs)
	}
}

func validateChannel(field, ch string, errs *FieldErrors) {
	parts := strings.Split(ch, "/")
	risks := []string{"stable", "candidate", "beta", "edge"}
	ok := len(parts) <= 3
	for _, p := range parts {
		ok = ok && p != "" && !strings.ContainsAny(p, " \t")
	}
	if ok && len(parts) >= 2 && !slices.Contains(risks, parts[1]) {
		ok = false
	}
	if !ok {
		errs.add(field, "%q is not a snap channel (track/risk[/branch], risk one of stable, candidate, beta, edge)", ch)
	}
}

func validatePort(field string, port int, errs *FieldErrors) {
	if port < 1 || port > 65535 {
		errs.add(field, "%d is not a port (1-65535)", port)
	}
}

func validateHTTPPath(field, p string, errs *FieldErrors) {
	if p != "" && !strings.HasPrefix(p, "/") {
		errs.add(field, "%q must start with /", p)
	}
}

func validatePorts(field string, ports []PortSpec, errs *FieldErrors) {
	published := map[string]int{}
	for i, p := range ports {
		f := fmt.Sprintf("%s[%d]", field, i)
		if p.shortErr != "" {
			errs.add(f, "%q: %s", p.short, p.shortErr)
			continue
		}
		var what string
		if p.short != "" {
			what = strconv.Quote(p.short) + ": "
		}
		ok := true
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			errs.add(f, "%scontainer port %d is not a port (1-65535)", what, p.ContainerPort)
			ok = false
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			errs.add(f, "%shost port %d is not a port (1-65535)", what, p.HostPort)
			ok = false
		}
		switch p.Protocol {
		case "", "tcp", "udp":
		default:
			errs.add(f, "%sprotocol %q: use tcp or udp", what, p.Protocol)
			ok = false
		}
		if p.HostIP != "" {
			if _, err := netip.ParseAddr(p.HostIP); err != nil {
				errs.add(f, "%shost IP %q is not an IP address", what, p.HostIP)
				ok = false
			}
		}
		if !ok || p.HostPort == 0 {
			continue
		}
		key := fmt.Sprintf("%s/%d/%s", p.HostIP, p.HostPort, protocolOf(p))
		if j, dup := published[key]; dup {
			errs.add(f, "%shost port %d/%s is already published by ports[%d]", what, p.HostPort, protocolOf(p), j)
		}
		published[key] = i
	}
}

func protocolOf(p PortSpec) string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}

func validateVolumes(field string, vols []VolumeSpec, errs *FieldErrors) {
	seen := map[string]int{}
	for i, v := range vols {
		f := fmt.Sprintf("%s[%d]", field, i)
		what := ""
		if v.short != "" {
			what = strconv.Quote(v.short) + ": "
		}
		if v.shortErr != "" {
			errs.add(f, "%s%s", what, v.shortErr)
			continue
		}
		if !path.IsAbs(v.HostPath) {
			errs.add(f, "%shost path %q must be absolute (named volumes are not supported)", what, v.HostPath)
		}
		switch {
		case !path.IsAbs(v.ContainerPath):
			errs.add(f, "%scontainer path %q must be absolute", what, v.ContainerPath)
		case path.Clean(v.ContainerPath) == "/":
			errs.add(f, "%scannot mount over the container's root", what)
		}
		if j, dup := seen[path.Clean(v.ContainerPath)]; dup && v.ContainerPath != "" {
			errs.add(f, "%scontainer path %q is already mounted by volumes[%d]", what, v.ContainerPath, j)
		}
		seen[path.Clean(v.ContainerPath)] = i
	}
}

// fieldPaths a valueFrom.fieldRef may name, besides metadata.labels['k'].
var fieldPaths = []string{"metadata.name", "metadata.role", "metadata.site"}

func validateEnv(field string, env []EnvVar, errs *FieldErrors) {
	seen := map[string]int{}
	for i, e := range env {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case e.Name == "":
			errs.add(f+".name", "required")
		case !envNameRE.MatchString(e.Name):
			errs.add(f+".name", "%q is not a variable name (letters, digits, _; not starting with a digit)", e.Name)
		default:
			if j, dup := seen[e.Name]; dup {
				errs.add(f+".name", "%q is already set by env[%d]", e.Name, j)
			}
			seen[e.Name] = i
		}
		if strings.ContainsRune(e.Value, 0) {
			errs.add(f+".value", "contains NUL")
		}
		if e.ValueFrom == nil {
			continue
		}
		if e.Value != "" {
			errs.add(f, "set value or valueFrom, not both")
		}
		if e.ValueFrom.FieldRef == nil {
			errs.add(f+".valueFrom.fieldRef", "required")
			continue
		}
		fp := e.ValueFrom.FieldRef.FieldPath
		if !slices.Contains(fieldPaths, fp) && !labelRefRE.MatchString(fp) {
			errs.add(f+".valueFrom.fieldRef.fieldPath", "%q: use metadata.name, metadata.role, metadata.site or metadata.labels['key']", fp)
		}
	}
}

// minContainerMemory is the smallest memory limit the Docker engine accepts.
const minContainerMemory = 6 << 20

func (r *Resources) validate(field string, errs *FieldErrors) {
	var mem, cpu [2]int64 // requests, limits
	for i, rl := range []*ResourceList{r.Requests, r.Limits} {
		if rl == nil {
			continue
		}
		f := field + [...]string{".requests", ".limits"}[i]
		if rl.Memory != "" {
			v, err := ParseMemory(rl.Memory)
			switch {
			case err != nil:
				errs.add(f+".memory", "%q: %v", rl.Memory, err)
			case v < minContainerMemory:
				errs.add(f+".memory", "%q is below the 6Mi minimum", rl.Memory)
			default:
				mem[i] = v
			}
		}
		if rl.CPU != "" {
			v, err := ParseCPU(rl.CPU)
			switch {
			case err != nil:
				errs.add(f+".cpu", "%q: %v", rl.CPU, err)
			case v == 0:
				errs.add(f+".cpu", "%q: must be more than zero", rl.CPU)
			default:
				cpu[i] = v
			}
		}
	}
	if mem[0] > 0 && mem[1] > 0 && mem[0] > mem[1] {
		errs.add(field+".requests.memory", "%q is more than the limit %q", r.Requests.Memory, r.Limits.Memory)
	}
	if cpu[0] > 0 && cpu[1] > 0 && cpu[0] > cpu[1] {
		errs.add(field+".requests.cpu", "%q is more than the limit %q", r.Requests.CPU, r.Limits.CPU)
	}
}

func (h *HealthCheck) validate(field string, errs *FieldErrors) {
	n := 0
	if h.HTTPGet != nil {
		n++
		validatePort(field+".httpGet.port", h.HTTPGet.Port, errs)
		validateHTTPPath(field+".httpGet.path", h.HTTPGet.Path, errs)
	}
	if h.TCPSocket != nil {
		n++
		validatePort(field+".tcpSocket.port", h.TCPSocket.Port, errs)
	}
	if h.Exec != nil {
		n++
		if len(h.Exec.Command) == 0 || h.Exec.Command[0] == "" {
			errs.add(field+".exec.command", "required")
		}
	}
	switch n {
	case 0:
		errs.add(field, "set one of httpGet, tcpSocket or exec")
	case 1:
	default:
		errs.add(field, "set only one of httpGet, tcpSocket or exec")
	}
	for _, s := range []struct {
		name string
		v    int
		min  int
	}{
		{"initialDelaySeconds", h.InitialDelaySeconds, 0},
		{"periodSeconds", h.PeriodSeconds, 0},
		{"timeoutSeconds", h.TimeoutSeconds, 0},
		{"failureThreshold", h.FailureThreshold, 0},
	} {
		if s.v < s.min {
			errs.add(field+"."+s.name, "%d must not be negative", s.v)
		}
	}
	if h.PeriodSeconds > 86400 || h.InitialDelaySeconds > 86400 || h.TimeoutSeconds > 3600 {
		errs.add(field, "durations are limited to a day (timeout to an hour)")
	}
}

func (u *UpdateStrategy) validate(field string, errs *FieldErrors) {
	switch u.Strategy {
	case "", StrategyRolling, StrategyCanary, StrategyBlueGreen:
	default:
		errs.add(field+".strategy", "%q: use rolling, canary or blue-green", u.Strategy)
	}
	if mu := u.MaxUnavailable; mu != "" {
		if u.Strategy != "" && u.Strategy != StrategyRolling {
			errs.add(field+".maxUnavailable", "only applies to the rolling strategy")
		} else if !validCountOrPercent(mu) {
			errs.add(field+".maxUnavailable", "%q: use a count (\"1\") or a percentage (\"25%%\") above zero", mu)
		}
	}
	if u.MinHealthySeconds < 0 {
		errs.add(field+".minHealthySeconds", "%d must not be negative", u.MinHealthySeconds)
	}
	if c := u.Canary; c != nil {
		if u.Strategy != StrategyCanary {
			errs.add(field+".canary", "only applies to the canary strategy (set strategy: canary)")
		}
		if c.Percent < 1 || c.Percent > 100 {
			errs.add(field+".canary.percent", "%d: use 1-100", c.Percent)
		}
		if c.PauseSeconds < 0 {
			errs.add(field+".canary.pauseSeconds", "%d must not be negative", c.PauseSeconds)
		}
	}
}

func validCountOrPercent(s string) bool {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(p)
		return err == nil && n > 0 && n <= 100
	}
	n, err := strconv.Atoi(s)
	return err == nil && n > 0
}
