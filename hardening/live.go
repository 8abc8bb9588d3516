package hardening

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Live is the running system, as opposed to the files it reads at boot.
// Check reads kernel parameters and service states through it; Apply and
// Undo use it to make the running system pick up the files they wrote.
// It is used only when the root is "/" unless Options.Live is set.
type Live interface {
	// Sysctl returns the running value of a kernel parameter.
	Sysctl(ctx context.Context, key string) (string, error)
	// ServiceActive reports whether a systemd unit is active.
	ServiceActive(ctx context.Context, unit string) (bool, error)
	// ReloadSysctl loads every sysctl.d file into the kernel.
	ReloadSysctl(ctx context.Context) error
	// StopServices reloads systemd's unit files and stops units.
	StopServices(ctx context.Context, units []string) error
	// ReloadSystemd reloads systemd's unit files.
	ReloadSystemd(ctx context.Context) error
	// LoadFirewall checks and then loads an nftables script.
	LoadFirewall(ctx context.Context, file string) error
	// RemoveFirewall deletes the table inet fleetmesh, if loaded.
	RemoveFirewall(ctx context.Context) error
	// ReloadSSH validates the sshd configuration and reloads sshd.
	ReloadSSH(ctx context.Context) error
	// ReloadFail2ban reloads fail2ban's jails.
	ReloadFail2ban(ctx context.Context) error
	// LoadAuditRules loads /etc/audit/rules.d into the kernel.
	LoadAuditRules(ctx context.Context) error
}

// HostLive returns the Live implementation for this host: /proc/sys and the
// sysctl, systemctl, nft, sshd, fail2ban-client and augenrules commands.
func HostLive() Live { return hostLive{} }

type hostLive struct{}

func (hostLive) Sysctl(_ context.Context, key string) (string, error) {
	data, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		return "", err
	}
	return strings.Join(strings.Fields(string(data)), " "), nil
}

// sdBooted reports whether systemd is the init system (sd_booted(3)); in a
// container without it no unit can be running and there is none to stop.
func sdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func (hostLive) ServiceActive(ctx context.Context, unit string) (bool, error) {
	if !sdBooted() {
		return false, nil
	}
	out, err := command(ctx, "systemctl", "is-active", unit)
	state := strings.TrimSpace(out)
	switch state {
	case "active", "activating", "reloading", "deactivating":
		return true, nil
	case "inactive", "failed", "unknown":
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return false, fmt.Errorf("systemctl is-active %s: %q", unit, state)
}

func (hostLive) ReloadSysctl(ctx context.Context) error {
	_, err := command(ctx, "sysctl", "--system")
	return err
}

func (h hostLive) StopServices(ctx context.Context, units []string) error {
	if !sdBooted() {
		return nil
	}
	if err := h.ReloadSystemd(ctx); err != nil {
		return err
	}
	_, err := command(ctx, "systemctl", append([]string{"stop", "--"}, units...)...)
	return err
}

func (hostLive) ReloadSystemd(ctx context.Context) error {
	if !sdBooted() {
		return nil
	}
	_, err := command(ctx, "systemctl", "daemon-reload")
	return err
}

func (hostLive) LoadFirewall(ctx context.Context, file string) error {
	if _, err := command(ctx, "nft", "-c", "-f", file); err != nil {
		return err
	}
	_, err := command(ctx, "nft", "-f", file)
	return err
}

func (hostLive) RemoveFirewall(ctx context.Context) error {
	if _, err := command(ctx, "nft", "list", "table", "inet", "fleetmesh"); err != nil {
		return nil // not loaded
	}
	_, err := command(ctx, "nft", "delete", "table", "inet", "fleetmesh")
	return err
}

func (hostLive) ReloadSSH(ctx context.Context) error {
	if _, err := command(ctx, "sshd", "-t"); err != nil {
		return fmt.Errorf("sshd rejects its configuration, not reloading it (run \"fleetmesh harden undo\"): %w", err)
	}
	_, err := command(ctx, "systemctl", "reload-or-restart", "ssh.service")
	return err
}

func (hostLive) ReloadFail2ban(ctx context.Context) error {
	_, err := command(ctx, "fail2ban-client", "reload")
	return err
}

func (hostLive) LoadAuditRules(ctx context.Context) error {
	_, err := command(ctx, "augenrules", "--load")
	return err
}

// command runs a system command with a bounded run time and returns its
// standard output; a failure carries the command's standard error.
func command(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ") // one line, for tables and gossip
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}
