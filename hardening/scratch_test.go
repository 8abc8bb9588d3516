package hardening

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// seedFile is one file of a scratch root; a target makes it a symlink.
type seedFile struct {
	path, data string
	mode       os.FileMode
	target     string
}

// realisticRoot is a Raspberry Pi OS / Debian style /etc with the
// violations a field device typically has.
var realisticRoot = []seedFile{
	{path: "/etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n", mode: 0o644},
	{path: "/etc/shadow", data: "root:*:19000:0:99999:7:::\npi:$y$j9T$x:19000:0:99999:7:::\n", mode: 0o644},
	{path: "/etc/ssh/sshd_config", mode: 0o644, data: "# An older image: no Include of sshd_config.d.\nPort 22\nPermitRootLogin yes\nUsePAM yes\nX11Forwarding yes\nSubsystem sftp /usr/lib/openssh/sftp-server\n"},
	{path: "/etc/ssh/sshd_config.d/50-cloud-init.conf", data: "PasswordAuthentication yes\n", mode: 0o600},
	{path: "/etc/sysctl.d/10-network-tweaks.conf", mode: 0o644, data: "# from a vendor image\nnet.ipv4.conf.all.accept_redirects = 1\nkernel.randomize_va_space=0\nnet.ipv4.conf.all.rp_filter = 1\n"},
	{path: "/etc/sysctl.conf", mode: 0o644, data: "# /etc/sysctl.conf\nnet.ipv4.tcp_syncookies=0\nnet.ipv4.ip_forward=1\n"},
	{path: "/etc/sysctl.d/99-sysctl.conf", target: "../sysctl.conf"},
	{path: "/usr/lib/sysctl.d/50-default.conf", mode: 0o644, data: "net.ipv4.conf.default.rp_filter = 2\n-net.ipv4.conf.*.rp_filter = 2\n"},
	{path: "/lib/systemd/system/bluetooth.service", data: "[Unit]\nDescription=Bluetooth service\n[Install]\nWantedBy=bluetooth.target\nAlias=dbus-org.bluez.service\n", mode: 0o644},
	{path: "/lib/systemd/system/avahi-daemon.service", data: "[Unit]\nDescription=Avahi\n[Install]\nWantedBy=multi-user.target\n", mode: 0o644},
	{path: "/lib/systemd/system/nftables.service", data: "[Unit]\nDescription=nftables\n[Install]\nWantedBy=sysinit.target\n", mode: 0o644},
	{path: "/etc/systemd/system/bluetooth.target.wants/bluetooth.service", target: "/lib/systemd/system/bluetooth.service"},
	{path: "/etc/systemd/system/dbus-org.bluez.service", target: "/lib/systemd/system/bluetooth.service"},
	{path: "/etc/systemd/system/multi-user.target.wants/avahi-daemon.service", target: "/lib/systemd/system/avahi-daemon.service"},
	{path: "/etc/nftables.conf", mode: 0o755, data: "#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter;\n\t}\n}\n"},
	{path: "/etc/fail2ban/jail.conf", mode: 0o644, data: "[DEFAULT]\nbantime  = 10m\nfindtime  = 10m\nmaxretry = 5\n\n[sshd]\nport    = ssh\nlogpath = %(sshd_log)s\n"},
	{path: "/etc/fail2ban/jail.d/defaults-debian.conf", mode: 0o644, data: "[sshd]\nenabled = true\n"},
	{path: "/etc/apt/apt.conf.d/20auto-upgrades", mode: 0o644, data: "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"0\";\n"},
	{path: "/etc/apt/apt.conf.d/50unattended-upgrades", mode: 0o644, data: "// stock file\nUnattended-Upgrade::Origins-Pattern {\n        \"origin=Debian,codename=${distro_codename},label=Debian\";\n        \"origin=Debian,codename=${distro_codename},label=Debian-Security\";\n};\n/* Unattended-Upgrade::Automatic-Reboot \"true\"; */\n//Unattended-Upgrade::Automatic-Reboot-Time \"02:00\";\n"},
	{path: "/etc/audit/rules.d/audit.rules", mode: 0o640, data: "## First rule - delete all\n-D\n-b 8192\n--backlog_wait_time 60000\n-f 1\n"},
	{path: "/etc/crypttab", mode: 0o644, data: "# <target name> <source device> <key file> <options>\n"},
	{path: "/etc/fstab", mode: 0o644, data: "proc /proc proc defaults 0 0\nPARTUUID=1-02 / ext4 defaults,noatime 0 1\n"},
	{path: "/proc/mounts", mode: 0o444, data: "/dev/mmcblk0p2 / ext4 rw,noatime 0 0\nproc /proc proc rw 0 0\n"},
	{path: "/var/lib/dpkg/status", mode: 0o644, data: ""},
}

func writeRoot(t *testing.T, files []seedFile) string {
	t.Helper()
	root := t.TempDir()
	for _, sf := range files {
		p := filepath.Join(root, sf.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if sf.target != "" {
			if err := os.Symlink(sf.target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(sf.data), sf.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, sf.mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// snapshot records every path below root (except fleetmesh's own state):
// its type, mode and content or link target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		relp := strings.TrimPrefix(p, root)
		if strings.HasPrefix(relp, "/var/lib/fleetmesh") {
			return fs.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[relp] = "symlink " + target
		case fi.IsDir():
			out[relp] = "dir " + fi.Mode().String()
		default:
			data, _ := os.ReadFile(p)
			out[relp] = fi.Mode().String() + " " + string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "missing "+k)
		} else if v != w {
			d = append(d, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	sort.Strings(d)
	return d
}

func loadExample(t *testing.T) *Policy {
	t.Helper()
	p, err := LoadPolicy("testdata/plant-baseline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func statuses(r *Report) map[string]Status {
	m := map[string]Status{}
	for _, res := range r.Results {
		m[res.Rule] = res.Status
	}
	return m
}

func TestCheckApplyUndoScratchRoot(t *testing.T) {
	ctx := context.Background()
	p := loadExample(t)
	root := writeRoot(t, realisticRoot)
	before := snapshot(t, root)

	rep, err := Check(ctx, p, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantFail := []string{
		"audit:commands", "audit:passwd_changes", "audit:shadow_changes",
		"fail2ban:sshd",
		"file-mode:/etc/shadow", "file-mode:/etc/ssh/sshd_config",
		"firewall:nftables",
		"service:avahi-daemon", "service:bluetooth",
		"ssh:PasswordAuthentication", "ssh:PermitRootLogin",
		"sysctl:kernel.randomize_va_space", "sysctl:net.ipv4.conf.all.accept_redirects",
		"sysctl:net.ipv4.conf.all.rp_filter", // systemd's 50-default.conf glob wins over 10-network-tweaks.conf
		"sysctl:net.ipv4.conf.all.send_redirects", "sysctl:net.ipv4.tcp_syncookies",
		"updates:reboot-time", "updates:security-only", "updates:unattended",
	}
	got := rep.Failing()
	sort.Strings(got)
	if !reflect.DeepEqual(got, wantFail) {
		t.Errorf("failing rules:\n got %q\nwant %q", got, wantFail)
	}
	st := statuses(rep)
	for rule, want := range map[string]Status{
		"service:cups":                            StatusPass, // not installed
		"file-mode:/etc/passwd":                   StatusPass,
		"data:encrypted-root":                     StatusNotApplicable,
		"sysctl:net.ipv4.conf.all.send_redirects": StatusFail,
	} {
		if st[rule] != want {
			t.Errorf("%s: %s, want %s", rule, st[rule], want)
		}
	}
	if rep.Score <= 0 || rep.Score >= 100 || rep.Compliant() {
		t.Errorf("score %.1f compliant %v for a non-compliant root", rep.Score, rep.Compliant())
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("check changed the root: %v", d)
	}

	// A dry run reports the same plan and changes nothing.
	dry, err := Apply(ctx, p, root, true, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Changes) == 0 || dry.Backup != "" {
		t.Fatalf("dry run: %d changes, backup %q", len(dry.Changes), dry.Backup)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("dry run changed the root: %v", d)
	}

	res, err := Apply(ctx, p, root, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != len(dry.Changes) {
		t.Errorf("apply made %d changes, dry run planned %d", len(res.Changes), len(dry.Changes))
	}
	if !res.Report.Compliant() || res.Report.Score != 100 {
		for _, r := range res.Report.Results {
			if r.Status == StatusFail {
				t.Errorf("after apply: %s: %s", r.Rule, r.Evidence)
			}
		}
	}
	if len(res.Unresolved) > 0 {
		t.Errorf("unresolved: %v", res.Unresolved)
	}
	after := snapshot(t, root)
	if !strings.Contains(after["/etc/sysctl.conf"], managedComment+"net.ipv4.tcp_syncookies=0") ||
		!strings.Contains(after["/etc/sysctl.conf"], "\nnet.ipv4.ip_forward=1") {
		t.Errorf("sysctl.conf after apply:\n%s", after["/etc/sysctl.conf"])
	}
	if after["/etc/systemd/system/bluetooth.service"] != "symlink /dev/null" {
		t.Errorf("bluetooth not masked: %q", after["/etc/systemd/system/bluetooth.service"])
	}
	if !strings.HasPrefix(after["/etc/shadow"], "-rw-r-----") || !strings.HasPrefix(after["/etc/ssh/sshd_config"], "-rw-------") {
		t.Errorf("modes after apply: shadow %.10s sshd_config %.10s", after["/etc/shadow"], after["/etc/ssh/sshd_config"])
	}

	// A second apply finds nothing to do, and leaves no backup.
	again, err := Apply(ctx, p, root, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 0 || again.Backup != "" {
		t.Errorf("second apply changed %v (backup %q)", again.Changes, again.Backup)
	}
	if d := diffSnapshots(after, snapshot(t, root)); len(d) > 0 {
		t.Errorf("second apply changed the root: %v", d)
	}

	u, err := Undo(ctx, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Backup != res.Backup {
		t.Errorf("undo used %s, apply wrote %s", u.Backup, res.Backup)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("undo did not restore the root: %v", d)
	}
	if _, err := Undo(ctx, root, Options{}); !errors.Is(err, ErrNothingToUndo) {
		t.Errorf("second undo: %v, want ErrNothingToUndo", err)
	}
}
