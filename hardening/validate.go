package hardening

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	reName      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)
	reRuleName  = regexp.MustCompile(`^[a-z0-9][-a-z0-9_]{0,31}$`)
	reUnit      = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]{1,240}$`)
	reMode      = regexp.MustCompile(`^[0-9]{3,5}$`)
	reClock     = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)
	reIface     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,15}$`)
	reAuditKey  = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,31}$`)
	reAuditFld  = regexp.MustCompile(`^[a-z0-9_]+(=|!=|<=|>=|<|>|&=|&)[^\s]+$`)
	reSyscall   = regexp.MustCompile(`^[a-z0-9_]+(,[a-z0-9_]+)*$`)
	rePermFlags = regexp.MustCompile(`^[rwxa]{1,4}$`)
)

// sysctlRange is the accepted integer range of a kernel parameter.
type sysctlRange struct{ min, max int64 }

// knownSysctls are the kernel parameters a policy may set. "*" stands for
// one interface segment (all, default or an interface name). The list is
// deliberately closed: a typo must be refused, not written to sysctl.d where
// the kernel would ignore it at boot.
var knownSysctls = map[string]sysctlRange{
	"net.ipv4.conf.*.accept_redirects":           {0, 1},
	"net.ipv4.conf.*.send_redirects":             {0, 1},
	"net.ipv4.conf.*.secure_redirects":           {0, 1},
	"net.ipv4.conf.*.accept_source_route":        {0, 1},
	"net.ipv4.conf.*.rp_filter":                  {0, 2},
	"net.ipv4.conf.*.log_martians":               {0, 1},
	"net.ipv4.tcp_syncookies":                    {0, 2},
	"net.ipv4.tcp_rfc1337":                       {0, 1},
	"net.ipv4.tcp_timestamps":                    {0, 2},
	"net.ipv4.icmp_echo_ignore_broadcasts":       {0, 1},
	"net.ipv4.icmp_ignore_bogus_error_responses": {0, 1},
	"net.ipv4.ip_forward":                        {0, 1},
	"net.ipv6.conf.*.accept_redirects":           {0, 1},
	"net.ipv6.conf.*.accept_source_route":        {-1, 1},
	"net.ipv6.conf.*.accept_ra":                  {0, 2},
	"net.ipv6.conf.*.forwarding":                 {0, 1},
	"net.ipv6.conf.*.disable_ipv6":               {0, 1},
	"kernel.randomize_va_space":                  {0, 2},
	"kernel.kptr_restrict":                       {0, 2},
	"kernel.dmesg_restrict":                      {0, 1},
	"kernel.yama.ptrace_scope":                   {0, 3},
	"kernel.sysrq":                               {0, 511},
	"kernel.unprivileged_bpf_disabled":           {0, 2},
	"kernel.kexec_load_disabled":                 {0, 1},
	"kernel.perf_event_paranoid":                 {-1, 4},
	"kernel.core_uses_pid":                       {0, 1},
	"fs.protected_hardlinks":                     {0, 1},
	"fs.protected_symlinks":                      {0, 1},
	"fs.protected_fifos":                         {0, 2},
	"fs.protected_regular":                       {0, 2},
	"fs.suid_dumpable":                           {0, 2},
	"net.core.bpf_jit_harden":                    {0, 2},
	"vm.mmap_min_addr":                           {0, 1 << 20},
	"user.max_user_namespaces":                   {0, 1<<31 - 1},
}

// lookupSysctl finds the accepted range for key, or false if the key is unknown.
func lookupSysctl(key string) (sysctlRange, bool) {
	if r, ok := knownSysctls[key]; ok {
		return r, true
	}
	parts := strings.Split(key, ".")
	if len(parts) == 5 && parts[1] != "" && parts[2] == "conf" && reIface.MatchString(parts[3]) {
		parts[3] = "*"
		r, ok := knownSysctls[strings.Join(parts, ".")]
		return r, ok
	}
	return sysctlRange{}, false
}

// protectedUnits may not be disabled by a policy: doing so would cut the
// device off from the fleet or its operators.
var protectedUnits = map[string]bool{
	"fleetmesh.service": true, "ssh.service": true, "sshd.service": true,
	"systemd-journald.service": true, "dbus.service": true,
}

// unitName returns the full systemd unit name for a policy entry.
func unitName(s string) string {
	for _, suf := range []string{".service", ".socket", ".path", ".timer", ".target", ".mount"} {
		if strings.HasSuffix(s, suf) {
			return s
		}
	}
	return s + ".service"
}

// parseMode parses an octal permission string such as "0640".
func parseMode(s string) (uint32, error) {
	if !reMode.MatchString(s) {
		return 0, fmt.Errorf("want an octal mode such as \"0640\"")
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("not an octal number")
	}
	if v > 0o7777 {
		return 0, fmt.Errorf("octal mode out of range (max 07777)")
	}
	return uint32(v), nil
}

// Validate reports every problem in p, each with its field path.
func (p *Policy) Validate() error {
	var errs fieldErrors
	if p.APIVersion != APIVersion {
		errs.add("apiVersion", p.APIVersion, "unsupported; want %s", APIVersion)
	}
	if p.Kind != Kind {
		errs.add("kind", p.Kind, "unsupported; want %s", Kind)
	}
	if !reName.MatchString(p.Metadata.Name) {
		errs.add("metadata.name", p.Metadata.Name, "want a DNS label: lower-case letters, digits, '-' and '.', at most 63")
	}
	s := &p.Spec
	seen := map[string]bool{}
	for i, svc := range s.OS.DisableServices {
		fp := fmt.Sprintf("spec.os.disableServices[%d]", i)
		switch u := unitName(svc); {
		case !reUnit.MatchString(svc) || strings.HasPrefix(svc, "."):
			errs.add(fp, svc, "invalid systemd unit name")
		case protectedUnits[u]:
			errs.add(fp, svc, "refusing to disable %s: the device would be cut off from the fleet", u)
		case seen[u]:
			errs.add(fp, svc, "listed twice")
		default:
			seen[u] = true
		}
	}
	for _, key := range sortedKeys(s.OS.Sysctl) {
		fp := fmt.Sprintf("spec.os.sysctl[%s]", key)
		r, ok := lookupSysctl(key)
		if !ok {
			errs.add(fp, key, "unknown sysctl key")
			continue
		}
		v, err := strconv.ParseInt(s.OS.Sysctl[key], 10, 64)
		if err != nil || v < r.min || v > r.max {
			errs.add(fp, s.OS.Sysctl[key], "want an integer from %d to %d", r.min, r.max)
		}
	}
	for _, file := range sortedKeys(s.OS.FilePermissions) {
		fp := fmt.Sprintf("spec.os.filePermissions[%s]", file)
		if !path.IsAbs(file) || path.Clean(file) != file || file == "/" {
			errs.add(fp, file, "want a clean absolute path to a file")
			continue
		}
		if _, err := parseMode(s.OS.FilePermissions[file]); err != nil {
			errs.add(fp, s.OS.FilePermissions[file], "%v", err)
		}
	}
	if ssh := s.OS.SSH; ssh != nil {
		switch ssh.PermitRootLogin {
		case "", "yes", "no", "prohibit-password", "forced-commands-only", "without-password":
		default:
			errs.add("spec.os.ssh.permitRootLogin", ssh.PermitRootLogin, "want yes, no, prohibit-password or forced-commands-only")
		}
		for _, f := range [...]struct{ name, v string }{
			{"passwordAuthentication", ssh.PasswordAuthentication},
			{"kbdInteractiveAuthentication", ssh.KbdInteractiveAuthentication},
			{"x11Forwarding", ssh.X11Forwarding},
		} {
			if f.v != "" && f.v != "yes" && f.v != "no" {
				errs.add("spec.os.ssh."+f.name, f.v, "want yes or no")
			}
		}
		if ssh.MaxAuthTries != nil && (*ssh.MaxAuthTries < 1 || *ssh.MaxAuthTries > 100) {
			errs.add("spec.os.ssh.maxAuthTries", strconv.Itoa(*ssh.MaxAuthTries), "want 1 to 100")
		}
	}
	if fw := s.Network.Firewall; fw != nil {
		switch fw.DefaultPolicy {
		case "", "drop", "accept":
		default:
			errs.add("spec.network.firewall.defaultPolicy", fw.DefaultPolicy, "want drop or accept")
		}
		names := map[string]bool{}
		for i, r := range fw.Rules {
			fp := fmt.Sprintf("spec.network.firewall.rules[%d]", i)
			switch {
			case !reRuleName.MatchString(r.Name):
				errs.add(fp+".name", r.Name, "want a name of lower-case letters, digits, '-' and '_', at most 32")
			case names[r.Name]:
				errs.add(fp+".name", r.Name, "duplicate rule name")
			}
			names[r.Name] = true
			if r.Port < 1 || r.Port > 65535 {
				errs.add(fp+".port", strconv.Itoa(r.Port), "want a port from 1 to 65535")
			}
			switch r.Protocol {
			case "", "tcp", "udp":
			default:
				errs.add(fp+".protocol", r.Protocol, "want tcp or udp")
			}
			if r.Source != "" {
				if err := checkSource(r.Source); err != nil {
					errs.add(fp+".source", r.Source, "%v", err)
				}
			}
		}
	}
	if f := s.Intrusion.Fail2ban; f != nil && f.SSHD != nil {
		j, fp := f.SSHD, "spec.intrusion.fail2ban.sshd"
		if j.Bantime == 0 || j.Bantime < -1 {
			errs.add(fp+".bantime", strconv.Itoa(j.Bantime), "want seconds > 0, or -1 to ban forever")
		}
		if j.Findtime <= 0 {
			errs.add(fp+".findtime", strconv.Itoa(j.Findtime), "want seconds > 0")
		}
		if j.Maxretry < 1 || j.Maxretry > 1000 {
			errs.add(fp+".maxretry", strconv.Itoa(j.Maxretry), "want 1 to 1000")
		}
	}
	if u := s.Updates; u != nil {
		if u.RebootTime != "" && !reClock.MatchString(u.RebootTime) {
			errs.add("spec.updates.rebootTime", u.RebootTime, "want a time of day as HH:MM (24-hour)")
		}
		if (u.Unattended == nil || !*u.Unattended) && (u.SecurityOnly || u.RebootTime != "") {
			errs.add("spec.updates.unattended", "", "securityOnly and rebootTime need unattended: true")
		}
	}
	if a := s.Audit; a != nil {
		for i, r := range a.Rules {
			if err := checkAuditRule(r); err != nil {
				errs.add(fmt.Sprintf("spec.audit.rules[%d]", i), r, "%v", err)
			}
		}
	}
	return errs.err()
}

func checkSource(s string) error {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("invalid CIDR")
		}
		if pfx.Masked() != pfx {
			return fmt.Errorf("host bits set; did you mean %s", pfx.Masked())
		}
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("invalid address")
	}
	return nil
}

// checkAuditRule accepts file watches (-w PATH [-p PERMS] [-k KEY]) and
// syscall rules (-a|-A ACTION,LIST [-F F=V]... [-S SYSCALL]... [-k KEY]).
// Control commands (-D, -e, -b, -f) belong to auditd's base configuration
// and are refused.
func checkAuditRule(rule string) error {
	tok := strings.Fields(rule)
	if len(tok) < 2 {
		return fmt.Errorf("invalid audit rule: want -w PATH or -a ACTION,LIST")
	}
	next := func(i int) (string, error) {
		if i+1 >= len(tok) {
			return "", fmt.Errorf("invalid audit rule: %s needs a value", tok[i])
		}
		return tok[i+1], nil
	}
	var opts []string
	switch tok[0] {
	case "-w":
		if !path.IsAbs(tok[1]) {
			return fmt.Errorf("invalid audit rule: -w needs an absolute path")
		}
		opts = []string{"-p", "-k"}
	case "-a", "-A":
		action, list, ok := strings.Cut(tok[1], ",")
		if !ok {
			return fmt.Errorf("invalid audit rule: -a needs ACTION,LIST such as always,exit")
		}
		if isAuditList(action) && isAuditAction(list) {
			action, list = list, action
		}
		if !isAuditAction(action) || !isAuditList(list) {
			return fmt.Errorf("invalid audit rule: %q is not ACTION,LIST (always|never, exit|task|user|exclude|filesystem|io_uring)", tok[1])
		}
		opts = []string{"-F", "-S", "-k", "-C"}
	default:
		return fmt.Errorf("invalid audit rule: only -w and -a/-A rules are allowed, not %s", tok[0])
	}
	for i := 2; i < len(tok); i += 2 {
		if !contains(opts, tok[i]) {
			return fmt.Errorf("invalid audit rule: unexpected %q", tok[i])
		}
		v, err := next(i)
		if err != nil {
			return err
		}
		var ok bool
		switch tok[i] {
		case "-p":
			ok = rePermFlags.MatchString(v)
		case "-k":
			ok = reAuditKey.MatchString(v)
		case "-F", "-C":
			ok = reAuditFld.MatchString(v)
		case "-S":
			ok = reSyscall.MatchString(v)
		}
		if !ok {
			return fmt.Errorf("invalid audit rule: bad value %q for %s", v, tok[i])
		}
	}
	return nil
}

func isAuditAction(s string) bool { return s == "always" || s == "never" }

func isAuditList(s string) bool {
	switch s {
	case "exit", "task", "user", "exclude", "filesystem", "io_uring":
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
