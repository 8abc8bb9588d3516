package hardening

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"path"
	"strings"
	"time"
)

// Status is the outcome of one rule.
type Status string

// The outcomes of a rule. Not-applicable rules do not count in the score.
const (
	StatusPass          Status = "pass"
	StatusFail          Status = "fail"
	StatusNotApplicable Status = "not-applicable"
)

// Result is the outcome of one rule of a policy, with the evidence for it.
type Result struct {
	Rule     string `json:"rule"` // e.g. "sysctl:kernel.randomize_va_space"
	Status   Status `json:"status"`
	Evidence string `json:"evidence"`
}

// Report is the outcome of checking a policy against a root.
type Report struct {
	Policy        string   `json:"policy"`
	Root          string   `json:"root"`
	Results       []Result `json:"results"`
	Passed        int      `json:"passed"`
	Failed        int      `json:"failed"`
	NotApplicable int      `json:"notApplicable"`
	// Score is the percentage of applicable rules that pass (100 when no
	// rule applies), rounded to one decimal.
	Score float64 `json:"score"`
}

// Compliant reports whether no rule failed.
func (r *Report) Compliant() bool { return r.Failed == 0 }

// Failing returns the names of the rules that failed, in report order.
func (r *Report) Failing() []string {
	var out []string
	for _, res := range r.Results {
		if res.Status == StatusFail {
			out = append(out, res.Rule)
		}
	}
	return out
}

// Options tunes Check, Apply and Undo. The zero value is ready to use.
type Options struct {
	// FleetPorts are opened in the firewall ahead of the policy's rules;
	// nil means DefaultFleetPorts. Pass an empty non-nil slice for none.
	FleetPorts []FleetPort
	// Live is the running system. Nil means the host when the root is "/"
	// and no live system otherwise, so a scratch root never touches the host.
	Live Live
	// Now names backups; nil means time.Now.
	Now func() time.Time
}

func (o Options) fleetPorts() []FleetPort {
	if o.FleetPorts == nil {
		return DefaultFleetPorts()
	}
	return o.FleetPorts
}

func (o Options) live(root string) Live {
	if o.Live != nil {
		return o.Live
	}
	if path.Clean(root) == "/" {
		return HostLive()
	}
	return nil
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Check evaluates p against the system below root and returns one result
// per rule. It changes nothing. With root "/" it also compares the running
// kernel parameters and services (see Options.Live).
func Check(ctx context.Context, p *Policy, root string, opts Options) (*Report, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	f, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ev, err := evaluate(ctx, p, f, opts.fleetPorts(), opts.live(root))
	if err != nil {
		return nil, err
	}
	return newReport(p, root, ev.results), nil
}

func newReport(p *Policy, root string, results []Result) *Report {
	r := &Report{Policy: p.Metadata.Name, Root: root, Results: results}
	for _, res := range results {
		switch res.Status {
		case StatusPass:
			r.Passed++
		case StatusFail:
			r.Failed++
		default:
			r.NotApplicable++
		}
	}
	r.Score = 100
	if n := r.Passed + r.Failed; n > 0 {
		r.Score = math.Round(float64(r.Passed)*1000/float64(n)) / 10
	}
	return r
}

// Paths of the files apply owns.
const (
	sysctlFile     = "/etc/sysctl.d/99-zz-fleetmesh-hardening.conf"
	sshdDropIn     = "/etc/ssh/sshd_config.d/00-fleetmesh-hardening.conf"
	sshdInclude    = "Include /etc/ssh/sshd_config.d/*.conf"
	nftFile        = "/etc/nftables.d/fleetmesh.nft"
	nftMain        = "/etc/nftables.conf"
	fail2banFile   = "/etc/fail2ban/jail.d/zz-fleetmesh.local"
	aptFile        = "/etc/apt/apt.conf.d/52fleetmesh-unattended-upgrades"
	auditFile      = "/etc/audit/rules.d/50-fleetmesh.rules"
	systemdEtc     = "/etc/systemd/system"
	nftablesUnit   = "nftables.service"
	managedComment = "# disabled by fleetmesh hardening: "
)

var unitDirs = []string{"/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// opKind is what one planned change does.
type opKind int

const (
	opWrite   opKind = iota // write data with mode
	opSymlink               // point path at target
	opRemove                // remove path
	opChmod                 // set mode
)

// op is one planned change to a file below the root.
type op struct {
	kind   opKind
	path   string
	data   []byte
	mode   fs.FileMode
	target string
	why    string
}

// liveStep is work on the running system after the files are written.
type liveStep int

const (
	liveSysctl liveStep = iota
	liveServices
	liveFirewall
	liveSSH
	liveFail2ban
	liveAudit
)

// evaluation is the result of one pass over the policy: the results of the
// checks, and what apply would change to make them pass.
type evaluation struct {
	results    []Result
	ops        []op
	live       map[liveStep]bool
	stopUnits  []string
	unresolved []string
}

func (e *evaluation) result(rule string, ok bool, evidence string, args ...any) {
	st := StatusFail
	if ok {
		st = StatusPass
	}
	e.results = append(e.results, Result{Rule: rule, Status: st, Evidence: fmt.Sprintf(evidence, args...)})
}

func (e *evaluation) na(rule, evidence string, args ...any) {
	e.results = append(e.results, Result{Rule: rule, Status: StatusNotApplicable, Evidence: fmt.Sprintf(evidence, args...)})
}

// ensureFile plans writing data to p (mode for a new file; an existing file
// keeps its mode) unless it already holds exactly that.
func (e *evaluation) ensureFile(f *rootFS, p string, data []byte, mode fs.FileMode, why string) bool {
	if rp, err := f.resolve(p); err == nil {
		p = rp
	}
	if fi, err := f.stat(p); err == nil {
		mode = fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		if cur, err := f.readFile(p); err == nil && bytes.Equal(cur, data) {
			return false
		}
	}
	for i := range e.ops {
		if e.ops[i].kind == opWrite && e.ops[i].path == p {
			e.ops[i].data = data
			return true
		}
	}
	e.ops = append(e.ops, op{kind: opWrite, path: p, data: data, mode: mode, why: why})
	return true
}

func evaluate(ctx context.Context, p *Policy, f *rootFS, fleet []FleetPort, live Live) (*evaluation, error) {
	e := &evaluation{live: map[liveStep]bool{}}
	s := &p.Spec
	checkServices(ctx, e, f, s.OS.DisableServices, live)
	checkSysctl(ctx, e, f, s.OS.Sysctl, live)
	checkSSH(e, f, s.OS.SSH)
	checkFirewall(e, f, s.Network.Firewall, fleet)
	if s.Intrusion.Fail2ban != nil && s.Intrusion.Fail2ban.SSHD != nil {
		checkFail2ban(e, f, s.Intrusion.Fail2ban.SSHD)
	}
	if s.Updates != nil && s.Updates.Unattended != nil {
		checkUpdates(e, f, s.Updates)
	}
	if s.Audit != nil && len(s.Audit.Rules) > 0 {
		checkAudit(e, f, s.Audit.Rules)
	}
	checkEncryptedRoot(e, f, s.Data.RequireEncryptedRoot)
	// File modes last: files written above keep their mode, so a chmod
	// planned here is the final word.
	checkFileModes(e, f, s.OS.FilePermissions)
	return e, ctx.Err()
}

// --- services ----------------------------------------------------------------

func checkServices(ctx context.Context, e *evaluation, f *rootFS, services []string, live Live) {
	for _, svc := range services {
		unit := unitName(svc)
		rule := "service:" + strings.TrimSuffix(svc, ".service")
		links := enablementLinks(f, unit)
		masked := isMasked(f, unit)
		installed := unitInstalled(f, unit)
		var problems []string
		if len(links) > 0 {
			problems = append(problems, "enabled via "+strings.Join(links, ", "))
		}
		if installed && !masked {
			problems = append(problems, "not masked")
		}
		for _, l := range links {
			e.ops = append(e.ops, op{kind: opRemove, path: l, why: "disable " + unit})
		}
		if installed && !masked {
			e.ops = append(e.ops, op{kind: opSymlink, path: path.Join(systemdEtc, unit), target: "/dev/null", why: "mask " + unit})
		}
		if live != nil && (installed || len(links) > 0) {
			active, err := live.ServiceActive(ctx, unit)
			switch {
			case err != nil:
				problems = append(problems, "state unknown: "+err.Error())
			case active:
				problems = append(problems, "running")
			}
			if active || len(problems) > 0 {
				e.live[liveServices] = true
				e.stopUnits = append(e.stopUnits, unit)
			}
		}
		switch {
		case len(problems) > 0:
			e.result(rule, false, "%s: %s", unit, strings.Join(problems, "; "))
		case !installed:
			e.result(rule, true, "%s is not installed and not enabled", unit)
		default:
			e.result(rule, true, "%s is masked and not enabled", unit)
		}
	}
}

// enablementLinks lists the symlinks in /etc/systemd/system that enable
// unit: entries in *.wants and *.requires directories, and aliases.
func enablementLinks(f *rootFS, unit string) []string {
	var out []string
	ents, _ := f.readDir(systemdEtc)
	for _, d := range ents {
		name := d.Name()
		p := path.Join(systemdEtc, name)
		if strings.HasSuffix(name, ".wants") || strings.HasSuffix(name, ".requires") {
			if fi, err := f.lstat(path.Join(p, unit)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				out = append(out, path.Join(p, unit))
			}
			continue
		}
		if name == unit || d.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if t, err := f.readlink(p); err == nil && path.Base(t) == unit {
			out = append(out, p) // an alias such as dbus-org.bluez.service
		}
	}
	return out
}

func isMasked(f *rootFS, unit string) bool {
	for _, d := range []string{systemdEtc, "/run/systemd/system"} {
		if t, err := f.readlink(path.Join(d, unit)); err == nil && t == "/dev/null" {
			return true
		}
	}
	return false
}

func unitInstalled(f *rootFS, unit string) bool {
	for _, d := range unitDirs {
		if fi, err := f.lstat(path.Join(d, unit)); err == nil {
			if fi.Mode()&fs.ModeSymlink != 0 {
				if t, _ := f.readlink(path.Join(d, unit)); t == "/dev/null" {
					continue
				}
			}
			return true
		}
	}
	return false
}

// --- sysctl ------------------------------------------------------------------

func checkSysctl(ctx context.Context, e *evaluation, f *rootFS, want map[string]string, live Live) {
	if len(want) == 0 {
		return
	}
	files := sysctlFiles(f, sysctlFile)
	ours := -1
	var all []setting
	fileIndex := map[string]int{}
	for i, file := range files {
		fileIndex[file] = i
		if file == sysctlFile {
			ours = i
		}
		if data, err := f.readFile(file); err == nil {
			all = append(all, parseSysctl(data, file)...)
		}
	}
	if e.ensureFile(f, sysctlFile, RenderSysctl(want), 0o644, "kernel parameters") {
		e.live[liveSysctl] = true
	}
	// Settings read after ours that contradict the policy are commented out.
	edits := map[string]map[int]bool{}
	for _, key := range sortedKeys(want) {
		rule := "sysctl:" + key
		var eff *setting
		for i := range all {
			if sysctlKeyMatches(all[i].key, key) {
				eff = &all[i]
			}
		}
		for _, st := range all {
			if fileIndex[st.file] > ours && sysctlKeyMatches(st.key, key) && st.value != want[key] {
				if edits[st.file] == nil {
					edits[st.file] = map[int]bool{}
				}
				edits[st.file][st.line] = true
			}
		}
		var ok bool
		var ev string
		switch {
		case eff == nil:
			ev = fmt.Sprintf("%s is not set in sysctl.d (the kernel default applies); want %s", key, want[key])
		case eff.value == want[key]:
			ok, ev = true, fmt.Sprintf("%s = %s (%s)", key, eff.value, eff.where())
		default:
			ev = fmt.Sprintf("%s = %s (%s); want %s", key, eff.value, eff.where(), want[key])
		}
		if live != nil {
			cur, err := live.Sysctl(ctx, key)
			switch {
			case err != nil:
				ok, ev = false, ev+"; running value unknown: "+err.Error()
			case cur != want[key]:
				ok, ev = false, ev+"; running kernel has "+cur
			}
			if !ok {
				e.live[liveSysctl] = true
			}
		}
		e.result(rule, ok, "%s", ev)
	}
	for _, file := range sortedKeys(edits) {
		data, err := f.readFile(file)
		if err != nil {
			continue
		}
		lines := strings.Split(string(data), "\n")
		for n := range edits[file] {
			lines[n-1] = managedComment + lines[n-1]
		}
		e.ensureFile(f, file, []byte(strings.Join(lines, "\n")), 0o644, "comment out kernel parameters that contradict the policy")
		e.live[liveSysctl] = true
	}
}

// --- sshd --------------------------------------------------------------------

func checkSSH(e *evaluation, f *rootFS, want *SSHSpec) {
	if want == nil {
		return
	}
	const main = "/etc/ssh/sshd_config"
	settings := sshdSettings(want)
	if !f.exists(main) {
		for _, kv := range settings {
			e.na("ssh:"+kv[0], "%s does not exist: openssh-server is not installed", main)
		}
		return
	}
	eff := sshdGlobal(f, main)
	for _, kv := range settings {
		kw := strings.ToLower(kv[0])
		got, where := sshdDefaults[kw], "OpenSSH default"
		for _, st := range eff {
			if st.key == kw {
				got, where = st.value, st.where()
				break
			}
		}
		ok := strings.EqualFold(got, kv[1])
		if ok {
			e.result("ssh:"+kv[0], true, "%s %s (%s)", kv[0], got, where)
		} else {
			e.result("ssh:"+kv[0], false, "%s %s (%s); want %s", kv[0], got, where, kv[1])
		}
	}
	changed := e.ensureFile(f, sshdDropIn, RenderSSHD(want), 0o644, "sshd settings")
	if data, err := f.readFile(main); err == nil && !sshdIncludesFirst(data) {
		out := "# Added by fleetmesh hardening: settings in sshd_config.d take precedence.\n" + sshdInclude + "\n\n" + string(data)
		changed = e.ensureFile(f, main, []byte(out), 0o600, "include sshd_config.d first") || changed
	}
	if changed {
		e.live[liveSSH] = true
	}
}

// sshdIncludesFirst reports whether the first directive of sshd_config
// includes the drop-in directory, so drop-ins win (sshd keeps first values).
func sshdIncludesFirst(data []byte) bool {
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if !strings.EqualFold(fields[0], "include") {
			return false
		}
		for _, a := range fields[1:] {
			if a == "/etc/ssh/sshd_config.d/*.conf" || a == "sshd_config.d/*.conf" {
				return true
			}
		}
		return false
	}
	return false
}

// --- firewall ----------------------------------------------------------------

func checkFirewall(e *evaluation, f *rootFS, fw *FirewallSpec, fleet []FleetPort) {
	if fw == nil {
		return
	}
	const rule = "firewall:nftables"
	want := RenderNftables(fw, fleet)
	var problems []string
	if cur, err := f.readFile(nftFile); err != nil {
		problems = append(problems, nftFile+" does not exist")
	} else if !bytes.Equal(cur, want) {
		problems = append(problems, nftFile+" differs from the policy's ruleset")
	}
	include := fmt.Sprintf("include %q", nftFile)
	main, err := f.readFile(nftMain)
	if err != nil || !containsLine(main, include) {
		problems = append(problems, nftMain+" does not include it")
	}
	installed := unitInstalled(f, nftablesUnit)
	enabled := len(enablementLinks(f, nftablesUnit)) > 0
	if !installed {
		problems = append(problems, "nftables is not installed")
		e.unresolved = append(e.unresolved, rule+": install the nftables package")
	} else if !enabled {
		problems = append(problems, "nftables.service is not enabled, so the ruleset is not loaded at boot")
	}
	if len(problems) > 0 {
		e.result(rule, false, "%s", strings.Join(problems, "; "))
	} else {
		e.result(rule, true, "%s matches the policy, included from %s, loaded at boot by nftables.service", nftFile, nftMain)
	}
	changed := e.ensureFile(f, nftFile, want, 0o644, "firewall ruleset")
	if err != nil {
		main = []byte("#!/usr/sbin/nft -f\n")
	}
	if !containsLine(main, include) {
		if len(main) > 0 && main[len(main)-1] != '\n' {
			main = append(main, '\n')
		}
		main = append(main, []byte("# Added by fleetmesh hardening.\n"+include+"\n")...)
		changed = e.ensureFile(f, nftMain, main, 0o755, "load the fleetmesh table at boot") || changed
	}
	if installed && !enabled {
		target := "/lib/systemd/system/" + nftablesUnit
		if f.exists("/usr/lib/systemd/system/" + nftablesUnit) {
			target = "/usr/lib/systemd/system/" + nftablesUnit
		}
		e.ops = append(e.ops, op{kind: opSymlink, path: path.Join(systemdEtc, "sysinit.target.wants", nftablesUnit), target: target, why: "enable nftables.service"})
	}
	if changed {
		e.live[liveFirewall] = true
	}
}

func containsLine(data []byte, line string) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// --- fail2ban ----------------------------------------------------------------

func checkFail2ban(e *evaluation, f *rootFS, j *JailSpec) {
	const rule = "fail2ban:sshd"
	if !f.exists("/etc/fail2ban") {
		e.result(rule, false, "fail2ban is not installed (no /etc/fail2ban)")
		e.unresolved = append(e.unresolved, rule+": install the fail2ban package")
		return
	}
	jail, def := map[string]setting{}, map[string]setting{}
	for _, file := range fail2banFiles(f) {
		data, err := f.readFile(file)
		if err != nil {
			continue
		}
		for _, st := range iniSettings(data, file) {
			sec, key, _ := strings.Cut(st.key, ".")
			switch sec {
			case "sshd":
				jail[key] = st
			case "DEFAULT":
				def[key] = st
			}
		}
	}
	get := func(key string) (setting, bool) {
		if st, ok := jail[key]; ok {
			return st, true
		}
		st, ok := def[key]
		return st, ok
	}
	var problems, evidence []string
	if st, ok := get("enabled"); !ok || !isTrue(st.value) {
		problems = append(problems, "jail sshd is not enabled")
	}
	for _, kv := range []struct {
		key  string
		want int
		time bool
	}{{"bantime", j.Bantime, true}, {"findtime", j.Findtime, true}, {"maxretry", j.Maxretry, false}} {
		st, ok := get(kv.key)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is not set; want %d", kv.key, kv.want))
			continue
		}
		got, valid := fail2banSeconds(st.value)
		if !kv.time {
			_, err := fmt.Sscan(st.value, &got)
			valid = err == nil
		}
		if !valid || got != kv.want {
			problems = append(problems, fmt.Sprintf("%s = %s (%s); want %d", kv.key, st.value, st.where(), kv.want))
		} else {
			evidence = append(evidence, fmt.Sprintf("%s = %s", kv.key, st.value))
		}
	}
	if len(problems) > 0 {
		e.result(rule, false, "%s", strings.Join(problems, "; "))
	} else {
		e.result(rule, true, "jail sshd enabled, %s", strings.Join(evidence, ", "))
	}
	if e.ensureFile(f, fail2banFile, RenderFail2banJail(j), 0o644, "fail2ban sshd jail") {
		e.live[liveFail2ban] = true
	}
}

func isTrue(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "1", "on":
		return true
	}
	return false
}

// --- unattended upgrades -----------------------------------------------------

func checkUpdates(e *evaluation, f *rootFS, u *UpdatesSpec) {
	c := &aptConfig{values: map[string]setting{}, lists: map[string][]string{}}
	for _, file := range aptFiles(f) {
		if data, err := f.readFile(file); err == nil {
			c.parse(data, file)
		}
	}
	on := *u.Unattended
	installed := f.exists("/etc/apt/apt.conf.d/50unattended-upgrades") || f.exists("/usr/bin/unattended-upgrade")
	val := func(k string) (string, string) {
		if st, ok := c.values[k]; ok {
			return st.value, st.where()
		}
		return "", "not set"
	}
	// updates:unattended
	{
		lists, w1 := val("APT::Periodic::Update-Package-Lists")
		upg, w2 := val("APT::Periodic::Unattended-Upgrade")
		want := boolDigit(on)
		ok := lists == want && upg == want
		ev := fmt.Sprintf("APT::Periodic::Update-Package-Lists %q (%s), APT::Periodic::Unattended-Upgrade %q (%s); want %q", lists, w1, upg, w2, want)
		if on && !installed {
			ok = false
			ev += "; unattended-upgrades is not installed"
			e.unresolved = append(e.unresolved, "updates:unattended: install the unattended-upgrades package")
		}
		e.result("updates:unattended", ok, "%s", ev)
	}
	if on && u.SecurityOnly {
		origins := append(append([]string(nil), c.lists["Unattended-Upgrade::Origins-Pattern"]...), c.lists["Unattended-Upgrade::Allowed-Origins"]...)
		var other []string
		for _, o := range origins {
			if !strings.Contains(strings.ToLower(o), "security") {
				other = append(other, o)
			}
		}
		switch {
		case len(origins) == 0:
			e.result("updates:security-only", false, "no Unattended-Upgrade origins configured")
		case len(other) > 0:
			e.result("updates:security-only", false, "non-security origins allowed: %s", strings.Join(other, ", "))
		default:
			e.result("updates:security-only", true, "only security origins: %s", strings.Join(origins, ", "))
		}
	}
	if on && u.RebootTime != "" {
		rb, w1 := val("Unattended-Upgrade::Automatic-Reboot")
		at, w2 := val("Unattended-Upgrade::Automatic-Reboot-Time")
		ok := isTrue(rb) && at == u.RebootTime
		e.result("updates:reboot-time", ok, "Automatic-Reboot %q (%s), Automatic-Reboot-Time %q (%s); want \"true\" at %q", rb, w1, at, w2, u.RebootTime)
	}
	e.ensureFile(f, aptFile, RenderUnattendedUpgrades(u), 0o644, "unattended upgrades")
}

// --- audit -------------------------------------------------------------------

func checkAudit(e *evaluation, f *rootFS, rules []string) {
	installed := f.exists("/etc/audit")
	present := map[string]string{}
	for _, file := range f.glob("/etc/audit/rules.d", "*.rules") {
		if data, err := f.readFile(file); err == nil {
			for _, l := range strings.Split(string(data), "\n") {
				if n := normalizeAuditRule(l); n != "" && !strings.HasPrefix(n, "#") {
					if _, ok := present[n]; !ok {
						present[n] = file
					}
				}
			}
		}
	}
	keys := map[string]int{}
	for _, r := range rules {
		keys[auditKey(r)]++
	}
	for i, r := range rules {
		rule := fmt.Sprintf("audit:rules[%d]", i)
		if k := auditKey(r); k != "" && keys[k] == 1 {
			rule = "audit:" + k
		}
		n := normalizeAuditRule(r)
		switch file, ok := present[n]; {
		case !installed:
			e.result(rule, false, "auditd is not installed (no /etc/audit)")
		case ok:
			e.result(rule, true, "%q in %s", n, file)
		default:
			e.result(rule, false, "%q is in no /etc/audit/rules.d/*.rules file", n)
		}
	}
	if !installed {
		e.unresolved = append(e.unresolved, "audit: install the auditd package")
		return
	}
	if e.ensureFile(f, auditFile, RenderAuditRules(rules), 0o640, "audit rules") {
		e.live[liveAudit] = true
	}
}

func auditKey(rule string) string {
	tok := strings.Fields(rule)
	for i := 0; i+1 < len(tok); i++ {
		if tok[i] == "-k" {
			return tok[i+1]
		}
	}
	return ""
}

// --- encrypted root (report only) ---------------------------------------------

func checkEncryptedRoot(e *evaluation, f *rootFS, require *bool) {
	if require == nil {
		return
	}
	const rule = "data:encrypted-root"
	enc, ev := rootEncrypted(f)
	switch {
	case !*require:
		e.na(rule, "not required by the policy; %s", ev)
	case enc:
		e.result(rule, true, "%s", ev)
	default:
		e.result(rule, false, "%s", ev)
		e.unresolved = append(e.unresolved, rule+": an unencrypted root cannot be fixed in place; re-image the device with LUKS")
	}
}

// rootEncrypted decides from /proc/mounts (or /etc/fstab), the device
// mapper names in /sys/block and /etc/crypttab whether / is on LUKS.
func rootEncrypted(f *rootFS) (bool, string) {
	dev, src := "", ""
	for _, file := range []string{"/proc/mounts", "/etc/fstab"} {
		data, err := f.readFile(file)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			fl := strings.Fields(l)
			if len(fl) >= 2 && fl[1] == "/" && !strings.HasPrefix(fl[0], "#") && fl[0] != "rootfs" {
				dev, src = fl[0], file
			}
		}
		if dev != "" {
			break
		}
	}
	if dev == "" {
		return false, "cannot find the root device in /proc/mounts or /etc/fstab"
	}
	name := strings.TrimPrefix(dev, "/dev/mapper/")
	if name == dev {
		return false, fmt.Sprintf("root is %s (%s), not a device-mapper device", dev, src)
	}
	for _, dm := range f.glob("/sys/block", "dm-*") {
		n, _ := f.readFile(dm + "/dm/name")
		if strings.TrimSpace(string(n)) != name {
			continue
		}
		uuid, _ := f.readFile(dm + "/dm/uuid")
		if strings.HasPrefix(string(uuid), "CRYPT-LUKS") {
			return true, fmt.Sprintf("root is %s (%s), a LUKS mapping (%s)", dev, src, dm)
		}
	}
	if data, err := f.readFile("/etc/crypttab"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if fl := strings.Fields(l); len(fl) >= 2 && fl[0] == name {
				return true, fmt.Sprintf("root is %s (%s), listed in /etc/crypttab", dev, src)
			}
		}
	}
	return false, fmt.Sprintf("root is %s (%s), which is not in /etc/crypttab", dev, src)
}

// --- file modes --------------------------------------------------------------

func checkFileModes(e *evaluation, f *rootFS, want map[string]string) {
	for _, file := range sortedKeys(want) {
		rule := "file-mode:" + file
		m, _ := parseMode(want[file])
		fi, err := f.stat(file)
		if err != nil {
			e.na(rule, "%s does not exist", file)
			continue
		}
		// A write planned above keeps the current mode, so the current
		// mode is still what counts.
		cur := unixMode(fi.Mode())
		if cur == m {
			e.result(rule, true, "%s is %04o", file, cur)
			continue
		}
		e.result(rule, false, "%s is %04o; want %04o", file, cur, m)
		rp, _ := f.resolve(file)
		e.ops = append(e.ops, op{kind: opChmod, path: rp, mode: goMode(m), why: fmt.Sprintf("mode %04o", m)})
	}
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func goMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
