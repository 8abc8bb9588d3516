package apps

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SystemdConfig configures a SystemdDriver.
type SystemdConfig struct {
	// UnitDir is where unit files are written. Default /etc/systemd/system.
	UnitDir string
	// Runner runs systemctl. Default ExecRunner.
	Runner Runner
	// Node is this device's name, recorded in every unit it writes.
	Node string
	// NamePrefix is prepended to unit names ("fleetmesh-<app>.service").
	NamePrefix string
	Logger     *slog.Logger
}

// SystemdDriver runs TypeSystemd applications as generated systemd units.
// A unit is fleetmesh's when its [Unit] section says X-Fleetmesh-Managed=true
// and X-Fleetmesh-Node is this node; no other unit is ever touched.
type SystemdDriver struct {
	cfg SystemdConfig
	log *slog.Logger
}

var _ interface {
	Driver
	Prober
} = (*SystemdDriver)(nil)

// NewSystemdDriver returns a driver for cfg.
func NewSystemdDriver(cfg SystemdConfig) (*SystemdDriver, error) {
	if cfg.Node == "" {
		return nil, errors.New("systemd driver: Node is required")
	}
	if cfg.UnitDir == "" {
		cfg.UnitDir = "/etc/systemd/system"
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SystemdDriver{cfg: cfg, log: log.With("component", "apps.systemd")}, nil
}

// UnitName is app's unit on this node.
func (d *SystemdDriver) UnitName(app string) string {
	return d.cfg.NamePrefix + "fleetmesh-" + app + ".service"
}

func (d *SystemdDriver) unitPath(app string) string {
	return filepath.Join(d.cfg.UnitDir, d.UnitName(app))
}

func (d *SystemdDriver) systemctl(ctx context.Context, args ...string) ([]byte, error) {
	return d.cfg.Runner.Run(ctx, "systemctl", args...)
}

// unitMarks reads the X-Fleetmesh-* keys of a unit file.
func unitMarks(data []byte) map[string]string {
	marks := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.HasPrefix(k, "X-Fleetmesh-") {
			marks[strings.TrimPrefix(k, "X-Fleetmesh-")] = v
		}
	}
	return marks
}

func (d *SystemdDriver) owns(marks map[string]string) bool {
	return marks["Managed"] == "true" && marks["Node"] == unitValue(d.cfg.Node)
}

// Ensure implements Driver.
func (d *SystemdDriver) Ensure(ctx context.Context, inst Instance, progress func(Status)) (Status, error) {
	fail := func(err error) (Status, error) { return Status{State: StateFailed, Message: err.Error()}, err }
	if inst.Type != TypeSystemd {
		return fail(fmt.Errorf("systemd driver: type %s: %w", inst.Type, ErrUnsupported))
	}
	unit, path := d.UnitName(inst.App), d.unitPath(inst.App)
	want := RenderUnit(inst, d.cfg.Node)
	old, err := os.ReadFile(path)
	exists := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fail(fmt.Errorf("read unit: %w", err))
	case !d.owns(unitMarks(old)):
		return fail(fmt.Errorf("unit %s: %w; rename or remove it", path, ErrNotOwned))
	}
	if exists && bytes.Equal(old, want) {
		st := d.activeState(ctx, unit)
		if st.State == StateFailed && (inst.RestartPolicy == RestartAlways || inst.RestartPolicy == RestartUnlessStopped) {
			d.log.Info("starting stopped unit", "unit", unit)
			if _, err := d.systemctl(ctx, "start", unit); err != nil {
				return fail(err)
			}
			st = d.activeState(ctx, unit)
		}
		return st, nil
	}
	if progress != nil {
		progress(Status{State: StateStarting})
	}
	if err := writeFileAtomic(path, want, 0o644); err != nil {
		return fail(fmt.Errorf("write unit: %w", err))
	}
	steps := [][]string{{"daemon-reload"}, {"enable", "--now", unit}}
	if exists {
		steps = [][]string{{"daemon-reload"}, {"enable", unit}, {"restart", unit}}
	}
	d.log.Info("installing unit", "unit", unit, "version", inst.Version, "replace", exists)
	for _, s := range steps {
		if _, err := d.systemctl(ctx, s...); err != nil {
			return fail(err)
		}
	}
	return d.activeState(ctx, unit), nil
}

// activeState asks systemd how the unit is doing.
func (d *SystemdDriver) activeState(ctx context.Context, unit string) Status {
	out, _ := d.systemctl(ctx, "is-active", unit) // non-zero exit for inactive
	switch s := strings.TrimSpace(string(out)); s {
	case "active", "reloading":
		return Status{State: StateRunning}
	case "activating":
		return Status{State: StateStarting, Message: "activating"}
	case "":
		return Status{State: StateFailed, Message: "systemctl is-active gave no answer"}
	default:
		return Status{State: StateFailed, Message: "unit is " + s}
	}
}

// Remove implements Driver.
func (d *SystemdDriver) Remove(ctx context.Context, app string) error {
	unit, path := d.UnitName(app), d.unitPath(app)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !d.owns(unitMarks(data)) {
		return fmt.Errorf("unit %s: %w", path, ErrNotOwned)
	}
	d.log.Info("removing unit", "unit", unit)
	if _, err := d.systemctl(ctx, "disable", "--now", unit); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	_, err = d.systemctl(ctx, "daemon-reload")
	return err
}

// List implements Driver.
func (d *SystemdDriver) List(ctx context.Context) ([]Observed, error) {
	paths, err := filepath.Glob(filepath.Join(d.cfg.UnitDir, d.cfg.NamePrefix+"fleetmesh-*.service"))
	if err != nil {
		return nil, err
	}
	var out []Observed
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		marks := unitMarks(data)
		if !d.owns(marks) || marks["App"] == "" || d.unitPath(marks["App"]) != p {
			continue
		}
		out = append(out, Observed{
			App: marks["App"], Version: marks["Version"], Hash: marks["Spec-Hash"],
			Status: d.activeState(ctx, filepath.Base(p)),
		})
	}
	return out, nil
}

// Endpoint implements Prober: a unit listens on the host.
func (d *SystemdDriver) Endpoint(_ context.Context, _ string, port int) (string, error) {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Exec implements Prober: the command runs on the host.
func (d *SystemdDriver) Exec(ctx context.Context, _ string, cmd []string) (int, error) {
	_, err := d.cfg.Runner.Run(ctx, cmd[0], cmd[1:]...)
	return exitStatus(err)
}

// RenderUnit generates the systemd unit for inst on node.
func RenderUnit(inst Instance, node string) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Generated by fleetmesh for application %s. Do not edit: fleetmesh", unitValue(inst.App))
	w("# rewrites or removes this file when the application's spec changes.")
	w("[Unit]")
	w("Description=fleetmesh application %s %s", unitValue(inst.App), unitValue(inst.Version))
	w("Wants=network-online.target")
	w("After=network-online.target")
	w("X-Fleetmesh-Managed=true")
	w("X-Fleetmesh-Node=%s", unitValue(node))
	w("X-Fleetmesh-App=%s", unitValue(inst.App))
	w("X-Fleetmesh-Version=%s", unitValue(inst.Version))
	w("X-Fleetmesh-Spec-Hash=%s", inst.Hash)
	w("")
	w("[Service]")
	w("Type=simple")
	args := make([]string, 0, len(inst.Command)+len(inst.Args))
	for _, a := range append(append([]string(nil), inst.Command...), inst.Args...) {
		args = append(args, strings.ReplaceAll(execQuote(a), "$", "$$"))
	}
	w("ExecStart=%s", strings.Join(args, " "))
	for _, e := range inst.Env {
		w("Environment=%s", execQuote(e.Name+"="+e.Value))
	}
	switch inst.RestartPolicy {
	case RestartAlways, RestartUnlessStopped:
		w("Restart=always")
	case RestartOnFailure:
		w("Restart=on-failure")
	default:
		w("Restart=no")
	}
	w("RestartSec=5")
	if inst.MemoryLimit > 0 {
		w("MemoryMax=%d", inst.MemoryLimit)
	}
	if inst.MemoryRequest > 0 {
		w("MemoryLow=%d", inst.MemoryRequest)
	}
	if inst.CPULimit > 0 {
		// CPUQuota is a percentage of one CPU; round up to a whole one.
		w("CPUQuota=%d%%", (inst.CPULimit+9)/10)
	}
	if inst.CPURequest > 0 {
		// CPUWeight: 100 is the default share, as 1 core of request.
		w("CPUWeight=%d", min(10000, max(1, inst.CPURequest/10)))
	}
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.Bytes()
}

// unitValue makes s safe as a plain unit file value: no line breaks, and
// '%' escaped so systemd does not read specifiers.
func unitValue(s string) string {
	s = strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
	return strings.ReplaceAll(s, "%", "%%")
}

// execQuote quotes one word for ExecStart= or Environment=: double quotes
// with C escapes when needed, and '%' doubled.
func execQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && !strings.ContainsAny(s, " \t\n\r\"'\\;") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
