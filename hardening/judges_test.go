package hardening

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests hand what apply renders to the real programs that will read
// it. The tools are installed by "make deps"; a test skips, naming the tool,
// only where it is absent.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return filepath.Join(dir, name)
			}
		}
		t.Skipf("%s is not installed (make deps installs it): %v", name, err)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(context.Background(), name, args...).CombinedOutput()
	return string(out), err
}

// appliedRoot applies the example policy to a realistic scratch root.
func appliedRoot(t *testing.T, p *Policy, opts Options) string {
	t.Helper()
	root := writeRoot(t, realisticRoot)
	if _, err := Apply(context.Background(), p, root, false, opts); err != nil {
		t.Fatal(err)
	}
	return root
}

// nftCheck runs "nft -c -f". As root it works in the host's namespace
// without changing anything; otherwise it tries a fresh user+net namespace.
func nftCheck(t *testing.T, nft, file string) (string, error) {
	t.Helper()
	if os.Geteuid() == 0 {
		return runTool(t, nft, "-c", "-f", file)
	}
	unshare := needTool(t, "unshare")
	return runTool(t, unshare, "-rn", nft, "-c", "-f", file)
}

func TestNftablesRulesetPassesNft(t *testing.T) {
	nft := needTool(t, "nft")
	p := loadExample(t)
	root := appliedRoot(t, p, Options{})
	file := filepath.Join(root, nftFile)
	if out, err := nftCheck(t, nft, file); err != nil {
		t.Fatalf("nft -c -f rejects the ruleset: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(file)
	for _, want := range []string{
		"policy drop;", "ct state established,related accept", `iif "lo" accept`,
		`ip saddr 10.0.0.0/8 tcp dport 22 accept comment "ssh"`,
		`tcp dport 8883 accept comment "mqtt"`,
		`ip saddr 10.0.5.10/32 tcp dport 9090 accept comment "metrics"`,
		"tcp dport 7946 accept", "udp dport 7946 accept", "tcp dport 7400 accept", "udp dport 51820 accept",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}

	// IPv6 sources, udp, accept policy and custom fleet ports.
	fw := &FirewallSpec{DefaultPolicy: "accept", Rules: []FirewallRule{
		{Name: "coap", Port: 5683, Protocol: "udp", Source: "fd00::/8"},
		{Name: "modbus", Port: 502, Source: "192.168.10.7"},
	}}
	other := filepath.Join(t.TempDir(), "other.nft")
	os.WriteFile(other, RenderNftables(fw, []FleetPort{{"gossip", 8301, "tcp"}}), 0o644)
	if out, err := nftCheck(t, nft, other); err != nil {
		t.Fatalf("nft -c -f rejects the ruleset: %v\n%s", err, out)
	}

	// The judge is real: it rejects a broken ruleset.
	os.WriteFile(other, []byte("table inet fleetmesh {\n\tchain input {\n\t\ttcp dport 99999 accept\n\t}\n}\n"), 0o644)
	if _, err := nftCheck(t, nft, other); err == nil {
		t.Fatal("nft -c accepted a port of 99999: the judge is not judging")
	}
}

// sshdHostKey makes a host key in a temporary directory, and /run/sshd,
// which sshd -t insists on.
func sshdHostKey(t *testing.T) string {
	t.Helper()
	keygen := needTool(t, "ssh-keygen")
	key := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	if out, err := runTool(t, keygen, "-q", "-t", "ed25519", "-N", "", "-f", key); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skipf("sshd -t needs /run/sshd, which cannot be created here: %v", err)
	}
	return key
}

func TestSSHDConfigPassesSshd(t *testing.T) {
	sshd := needTool(t, "sshd")
	key := sshdHostKey(t)
	p := loadExample(t)
	tries := 3
	p.Spec.OS.SSH.MaxAuthTries = &tries
	p.Spec.OS.SSH.X11Forwarding = "no"
	p.Spec.OS.SSH.KbdInteractiveAuthentication = "no"
	root := appliedRoot(t, p, Options{})
	dropIn := filepath.Join(root, sshdDropIn)
	if out, err := runTool(t, sshd, "-t", "-f", dropIn, "-h", key); err != nil {
		t.Fatalf("sshd -t rejects the drop-in: %v\n%s", err, out)
	}

	// The scratch sshd_config, with its Include pointed at the scratch
	// drop-in directory: sshd's own view of the effective settings.
	main, _ := os.ReadFile(filepath.Join(root, "/etc/ssh/sshd_config"))
	cfg := strings.ReplaceAll(string(main), "/etc/ssh/sshd_config.d/", filepath.Join(root, "/etc/ssh/sshd_config.d")+"/")
	cfg = strings.ReplaceAll(cfg, "Subsystem sftp", "#Subsystem sftp")
	mainFile := filepath.Join(t.TempDir(), "sshd_config")
	os.WriteFile(mainFile, []byte(cfg), 0o600)
	out, err := runTool(t, sshd, "-T", "-f", mainFile, "-h", key)
	if err != nil {
		t.Fatalf("sshd -T rejects the applied sshd_config: %v\n%s", err, out)
	}
	for _, want := range []string{"permitrootlogin no", "passwordauthentication no", "kbdinteractiveauthentication no", "x11forwarding no", "maxauthtries 3"} {
		if !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("sshd -T does not show %q", want)
		}
	}

	// Our reading of the same files agrees with sshd's.
	rep, err := Check(context.Background(), p, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for rule, st := range statuses(rep) {
		if strings.HasPrefix(rule, "ssh:") && st != StatusPass {
			t.Errorf("%s: %s after apply", rule, st)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.conf")
	os.WriteFile(bad, []byte("PermitRootLogin sometimes\n"), 0o600)
	if _, err := runTool(t, sshd, "-t", "-f", bad, "-h", key); err == nil {
		t.Fatal("sshd -t accepted PermitRootLogin sometimes: the judge is not judging")
	}
}

// fail2banConfDir copies the installed fail2ban configuration (filters,
// actions, paths) into a temporary directory and adds jail.
func fail2banConfDir(t *testing.T, jail []byte) string {
	t.Helper()
	if _, err := os.Stat("/etc/fail2ban/jail.conf"); err != nil {
		t.Skipf("fail2ban's configuration is not installed (make deps installs it): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "fail2ban")
	if out, err := runTool(t, "cp", "-a", "/etc/fail2ban", dir); err != nil {
		t.Fatalf("copy /etc/fail2ban: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "jail.d", filepath.Base(fail2banFile)), jail, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFail2banJailPassesFail2banClient(t *testing.T) {
	client := needTool(t, "fail2ban-client")
	p := loadExample(t)
	root := appliedRoot(t, p, Options{})
	jail, err := os.ReadFile(filepath.Join(root, fail2banFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := fail2banConfDir(t, jail)
	out, err := runTool(t, client, "-c", dir, "-t")
	if err != nil || !strings.Contains(out, "OK: configuration test is successful") {
		t.Fatalf("fail2ban-client -t rejects the jail: %v\n%s", err, out)
	}
	// fail2ban's own dump of the merged configuration has our values.
	out, err = runTool(t, client, "-c", dir, "-d")
	if err != nil {
		t.Fatalf("fail2ban-client -d: %v\n%s", err, out)
	}
	for _, want := range []string{"['set', 'sshd', 'bantime', '3600']", "['set', 'sshd', 'findtime', '600']", "['set', 'sshd', 'maxretry', 5]"} {
		if !strings.Contains(out, want) {
			t.Errorf("fail2ban-client -d lacks %s", want)
		}
	}

	bad := fail2banConfDir(t, []byte("[sshd]\nenabled = true\nfilter = no-such-filter\n"))
	if out, err := runTool(t, client, "-c", bad, "-t"); err == nil && strings.Contains(out, "successful") {
		t.Fatal("fail2ban-client -t accepted a missing filter: the judge is not judging")
	}
}

// aptConfigDump runs apt's own configuration reader on the scratch root's
// /etc/apt (APT_CONFIG is read before the parts directory, so it can move
// Dir::Etc there).
func aptConfigDump(t *testing.T, aptConfig, root string) string {
	t.Helper()
	main := filepath.Join(t.TempDir(), "apt.conf")
	os.WriteFile(main, []byte("Dir::Etc \""+filepath.Join(root, "etc/apt")+"/\";\n"), 0o644)
	cmd := exec.CommandContext(context.Background(), aptConfig, "dump")
	cmd.Env = append(os.Environ(), "APT_CONFIG="+main)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-config dump: %v\n%s", err, out)
	}
	return string(out)
}

func TestUnattendedUpgradesPassAptConfig(t *testing.T) {
	aptConfig := needTool(t, "apt-config")
	p := loadExample(t)
	root := writeRoot(t, realisticRoot)
	before := aptConfigDump(t, aptConfig, root)
	if !strings.Contains(before, `APT::Periodic::Unattended-Upgrade "0";`) {
		t.Fatalf("the judge does not read the scratch root:\n%s", before)
	}
	if _, err := Apply(context.Background(), p, root, false, Options{}); err != nil {
		t.Fatal(err)
	}
	out := aptConfigDump(t, aptConfig, root)
	for _, want := range []string{
		`APT::Periodic::Update-Package-Lists "1";`,
		`APT::Periodic::Unattended-Upgrade "1";`,
		`Unattended-Upgrade::Automatic-Reboot "true";`,
		`Unattended-Upgrade::Automatic-Reboot-Time "03:00";`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apt-config dump lacks %s", want)
		}
	}
	// #clear removed the stock non-security origin; only security ones remain.
	var origins []string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Unattended-Upgrade::Origins-Pattern:: "); ok {
			origins = append(origins, v)
			if !strings.Contains(strings.ToLower(v), "security") {
				t.Errorf("apt allows a non-security origin: %s", v)
			}
		}
	}
	if len(origins) != len(securityOrigins) {
		t.Errorf("apt sees origins %q, want the %d security origins", origins, len(securityOrigins))
	}
}
