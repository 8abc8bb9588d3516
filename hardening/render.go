package hardening

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// FleetPort is a port fleetmesh itself needs open on every device.
type FleetPort struct {
	Name     string // shown as the rule's comment
	Port     int
	Protocol string // tcp or udp
}

// DefaultFleetPorts are the ports a default fleetmesh agent listens on:
// gossip 7946 (tcp and udp), the node API 7400/tcp and WireGuard 51820/udp.
// The node agent passes its configured ports instead when they differ.
func DefaultFleetPorts() []FleetPort {
	return []FleetPort{
		{"fleetmesh-gossip", 7946, "tcp"},
		{"fleetmesh-gossip", 7946, "udp"},
		{"fleetmesh-api", 7400, "tcp"},
		{"fleetmesh-wireguard", 51820, "udp"},
	}
}

const managedHeader = "Managed by fleetmesh hardening; local edits are overwritten by the next apply."

// RenderNftables renders the firewall as an nftables script that replaces
// only the table "inet fleetmesh" (other tables, such as Docker's, are left
// alone): established and related traffic, loopback, ICMP echo and ICMPv6
// (IPv6 does not work without it), the fleet's own ports, then the policy's
// rules, under the input chain's default policy.
func RenderNftables(fw *FirewallSpec, fleet []FleetPort) []byte {
	var b bytes.Buffer
	policy := "drop"
	if fw != nil && fw.DefaultPolicy != "" {
		policy = fw.DefaultPolicy
	}
	fmt.Fprintf(&b, "#!/usr/sbin/nft -f\n# %s\n", managedHeader)
	b.WriteString("# Loading this file replaces the table inet fleetmesh and nothing else.\n")
	b.WriteString("table inet fleetmesh\ndelete table inet fleetmesh\n\n")
	b.WriteString("table inet fleetmesh {\n\tchain input {\n")
	fmt.Fprintf(&b, "\t\ttype filter hook input priority filter; policy %s;\n", policy)
	b.WriteString("\t\tct state established,related accept\n")
	b.WriteString("\t\tct state invalid drop\n")
	b.WriteString("\t\tiif \"lo\" accept\n")
	b.WriteString("\t\tmeta l4proto icmp icmp type echo-request accept\n")
	b.WriteString("\t\tmeta l4proto ipv6-icmp accept\n")
	for _, fp := range fleet {
		fmt.Fprintf(&b, "\t\t%s dport %d accept comment %q\n", fp.Protocol, fp.Port, fp.Name)
	}
	if fw != nil {
		for _, r := range fw.Rules {
			b.WriteString("\t\t")
			if r.Source != "" {
				if addrFamily(r.Source) == 6 {
					fmt.Fprintf(&b, "ip6 saddr %s ", r.Source)
				} else {
					fmt.Fprintf(&b, "ip saddr %s ", r.Source)
				}
			}
			fmt.Fprintf(&b, "%s dport %d accept comment %q\n", protocol(r.Protocol), r.Port, r.Name)
		}
	}
	b.WriteString("\t}\n}\n")
	return b.Bytes()
}

func protocol(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

func addrFamily(s string) int {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		if pfx.Addr().Is4() {
			return 4
		}
		return 6
	}
	if a, err := netip.ParseAddr(s); err == nil && !a.Is4() {
		return 6
	}
	return 4
}

// sshdSettings lists the sshd keywords the policy sets, in a fixed order.
func sshdSettings(s *SSHSpec) [][2]string {
	var out [][2]string
	add := func(k, v string) {
		if v != "" {
			out = append(out, [2]string{k, v})
		}
	}
	add("PermitRootLogin", s.PermitRootLogin)
	add("PasswordAuthentication", s.PasswordAuthentication)
	add("KbdInteractiveAuthentication", s.KbdInteractiveAuthentication)
	add("X11Forwarding", s.X11Forwarding)
	if s.MaxAuthTries != nil {
		add("MaxAuthTries", fmt.Sprint(*s.MaxAuthTries))
	}
	return out
}

// RenderSSHD renders an sshd_config drop-in with the policy's settings.
func RenderSSHD(s *SSHSpec) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n", managedHeader)
	for _, kv := range sshdSettings(s) {
		fmt.Fprintf(&b, "%s %s\n", kv[0], kv[1])
	}
	return b.Bytes()
}

// RenderFail2banJail renders the sshd jail. The systemd backend reads the
// journal, which is where sshd logs on current Debian and Raspberry Pi OS.
func RenderFail2banJail(j *JailSpec) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n[sshd]\nenabled = true\nport = ssh\nbackend = systemd\n", managedHeader)
	fmt.Fprintf(&b, "bantime = %d\nfindtime = %d\nmaxretry = %d\n", j.Bantime, j.Findtime, j.Maxretry)
	return b.Bytes()
}

// normalizeAuditRule collapses whitespace so equal rules compare equal.
func normalizeAuditRule(r string) string { return strings.Join(strings.Fields(r), " ") }

// RenderAuditRules renders an augenrules fragment for /etc/audit/rules.d.
func RenderAuditRules(rules []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "## %s\n", managedHeader)
	for _, r := range rules {
		b.WriteString(normalizeAuditRule(r) + "\n")
	}
	return b.Bytes()
}

// RenderSysctl renders a sysctl.d file, keys sorted.
func RenderSysctl(m map[string]string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n", managedHeader)
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(&b, "%s = %s\n", k, m[k])
	}
	return b.Bytes()
}

// Security origins for unattended-upgrades on Debian, Raspberry Pi OS and
// Ubuntu; securityOnly clears whatever other origins are configured.
var securityOrigins = []string{
	"origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
	"origin=Debian,codename=${distro_codename},label=Debian-Security",
	"origin=Ubuntu,archive=${distro_codename}-security",
}

// RenderUnattendedUpgrades renders an apt.conf.d fragment that switches the
// periodic unattended upgrade on (or off), optionally restricts it to
// security origins and sets the automatic reboot window. It is named to be
// read after 20auto-upgrades and 50unattended-upgrades, so its values win.
func RenderUnattendedUpgrades(u *UpdatesSpec) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// %s\n", managedHeader)
	on := u.Unattended != nil && *u.Unattended
	fmt.Fprintf(&b, "APT::Periodic::Update-Package-Lists \"%s\";\n", boolDigit(on))
	fmt.Fprintf(&b, "APT::Periodic::Unattended-Upgrade \"%s\";\n", boolDigit(on))
	if !on {
		return b.Bytes()
	}
	if u.SecurityOnly {
		b.WriteString("#clear Unattended-Upgrade::Allowed-Origins;\n")
		b.WriteString("#clear Unattended-Upgrade::Origins-Pattern;\n")
		b.WriteString("Unattended-Upgrade::Origins-Pattern {\n")
		for _, o := range securityOrigins {
			fmt.Fprintf(&b, "\t%q;\n", o)
		}
		b.WriteString("};\n")
	}
	if u.RebootTime != "" {
		b.WriteString("Unattended-Upgrade::Automatic-Reboot \"true\";\n")
		fmt.Fprintf(&b, "Unattended-Upgrade::Automatic-Reboot-Time %q;\n", u.RebootTime)
	} else {
		b.WriteString("Unattended-Upgrade::Automatic-Reboot \"false\";\n")
	}
	return b.Bytes()
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
