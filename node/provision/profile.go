package provision

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Role is what a device does in the fleet.
type Role string

// The roles of the device model.
const (
	RoleGateway Role = "gateway"
	RoleSensor  Role = "sensor"
	RoleCompute Role = "compute"
	RoleStorage Role = "storage"
	RoleHybrid  Role = "hybrid"
)

// Roles lists every valid role.
var Roles = []Role{RoleGateway, RoleSensor, RoleCompute, RoleStorage, RoleHybrid}

// Model is a Raspberry Pi model, spelled as in profiles.
type Model string

// ModelInfo is what provisioning needs to know about a model.
type ModelInfo struct {
	// GOARCH of the fleetmesh binary the image must carry. Ubuntu Server for
	// the Pi 3B+ and Zero 2 W is arm64 too; the table stays so a 32-bit model
	// (armhf, GOARCH=arm) can be added without touching callers.
	GOARCH string
	// Ethernet is false for models with no built-in Ethernet port.
	Ethernet bool
	// WiFi is false for models without a radio (the CM4 Lite variants have
	// one optionally; the profile may still ask for it).
	WiFi bool
}

// Models is the table of supported models.
var Models = map[Model]ModelInfo{
	"Pi3B+":  {GOARCH: "arm64", Ethernet: true, WiFi: true},
	"Pi4":    {GOARCH: "arm64", Ethernet: true, WiFi: true},
	"Pi5":    {GOARCH: "arm64", Ethernet: true, WiFi: true},
	"CM4":    {GOARCH: "arm64", Ethernet: true, WiFi: true},
	"Zero2W": {GOARCH: "arm64", Ethernet: false, WiFi: true},
}

// DefaultUser is the login created on the device when the profile names none.
const DefaultUser = "ops"

// Profile describes one device. Field names are the YAML keys; the CSV form
// is described in csv.go.
type Profile struct {
	ID          string            `yaml:"id" json:"id"`
	Hostname    string            `yaml:"hostname" json:"hostname"`
	Role        Role              `yaml:"role" json:"role"`
	Model       Model             `yaml:"model" json:"model"`
	Serial      string            `yaml:"serial,omitempty" json:"serial,omitempty"`
	Site        string            `yaml:"site" json:"site"`
	Labels      map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Network     Network           `yaml:"network" json:"network"`
	User        string            `yaml:"user,omitempty" json:"user,omitempty"`
	SSHKeys     []string          `yaml:"ssh_keys,omitempty" json:"ssh_keys,omitempty"`
	Timezone    string            `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	Locale      string            `yaml:"locale,omitempty" json:"locale,omitempty"`
	NTP         []string          `yaml:"ntp,omitempty" json:"ntp,omitempty"`
	Packages    []string          `yaml:"packages,omitempty" json:"packages,omitempty"`
	Services    []string          `yaml:"services,omitempty" json:"services,omitempty"`
	Environment map[string]string `yaml:"environment,omitempty" json:"environment,omitempty"`
}

// Network is the device's primary link. Addressing is DHCP (dhcp: true) or
// static (address with prefix length, optional gateway and dns); it applies
// to the VLAN interface when vlan is set, to the Wi-Fi link when interface is
// a wireless one (wl*), and to interface otherwise. A Wi-Fi network given next
// to a wired interface becomes a second, DHCP-configured, optional uplink.
type Network struct {
	Interface string   `yaml:"interface" json:"interface"`
	DHCP      *bool    `yaml:"dhcp,omitempty" json:"dhcp,omitempty"`
	Address   string   `yaml:"address,omitempty" json:"address,omitempty"`
	Gateway   string   `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	DNS       []string `yaml:"dns,omitempty" json:"dns,omitempty"`
	VLAN      *int     `yaml:"vlan,omitempty" json:"vlan,omitempty"`
	WiFi      *WiFi    `yaml:"wifi,omitempty" json:"wifi,omitempty"`
}

// WiFi is a WPA2-PSK (or open, without password) network.
type WiFi struct {
	SSID      string `yaml:"ssid" json:"ssid"`
	Password  string `yaml:"password,omitempty" json:"-"`
	Interface string `yaml:"interface,omitempty" json:"interface,omitempty"`
}

// DefaultWiFiInterface is the radio's name on every supported model.
const DefaultWiFiInterface = "wlan0"

// UserName returns the login to create.
func (p *Profile) UserName() string {
	if p.User == "" {
		return DefaultUser
	}
	return p.User
}

// GOARCH returns the architecture of the fleetmesh binary for this device.
func (p *Profile) GOARCH() string { return Models[p.Model].GOARCH }

// isWireless reports whether the primary interface is the Wi-Fi one.
func (n *Network) isWireless() bool { return strings.HasPrefix(n.Interface, "wl") }

// wifiInterface is the name of the wireless link.
func (n *Network) wifiInterface() string {
	if n.isWireless() {
		return n.Interface
	}
	if n.WiFi != nil && n.WiFi.Interface != "" {
		return n.WiFi.Interface
	}
	return DefaultWiFiInterface
}

// dhcp reports whether the primary link uses DHCP.
func (n *Network) dhcp() bool { return n.DHCP != nil && *n.DHCP }

// FieldError is one problem with one field. Path is in the form
// devices[2].network.address (or network.address for a single profile).
type FieldError struct {
	Path  string
	Value string // the offending value, quoted in Error; empty when none
	Msg   string
}

func (e FieldError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("%s: %q: %s", e.Path, e.Value, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// ValidationError collects every problem found, so an operator fixes a fleet
// file in one pass.
type ValidationError struct {
	Errs []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	if len(e.Errs) == 1 {
		b.WriteString("invalid device profile: ")
		b.WriteString(e.Errs[0].Error())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid device profile: %d problems:", len(e.Errs))
	for i, fe := range e.Errs {
		if i == maxReported {
			fmt.Fprintf(&b, "\n  ... and %d more", len(e.Errs)-maxReported)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// maxReported bounds the problems Error lists; Errs keeps them all.
const maxReported = 50

// Is makes errors.Is(err, ErrInvalidProfile) hold.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidProfile }

type errList struct{ errs []FieldError }

func (l *errList) add(path, value, format string, args ...any) {
	l.errs = append(l.errs, FieldError{Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	return &ValidationError{Errs: l.errs}
}

func join(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

var (
	reHostname  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	reID        = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)
	reName      = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	reLabelKey  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	reLabelVal  = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
	reSerial    = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	reIfname    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,15}$`)
	reUser      = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	reTimezone  = regexp.MustCompile(`^(UTC|[A-Z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){1,2})$`)
	reLocale    = regexp.MustCompile(`^([a-z]{2,3}_[A-Z]{2}|C)(\.(UTF-8|utf8))(@[a-z]+)?$`)
	rePackage   = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]{1,}(=[A-Za-z0-9.+:~-]+)?$`)
	reService   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:_.@-]{0,254}$`)
	reEnvKey    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	reNTPServer = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)
)

// sshKeyTypes are the public key algorithms OpenSSH accepts in
// authorized_keys; DSA and RSA-SHA1-only setups are not on the list.
var sshKeyTypes = map[string]bool{
	"ssh-ed25519": true, "ssh-rsa": true,
	"ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true, "ecdsa-sha2-nistp521": true,
	"sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// Validate checks the profile; prefix names it in error paths ("" for a
// single profile, "devices[3]" inside a fleet).
func (p *Profile) Validate() error { return p.validate("") }

func (p *Profile) validate(prefix string) error {
	var l errList
	p.check(&l, prefix)
	return l.err()
}

func (p *Profile) check(l *errList, prefix string) {
	f := func(name string) string { return join(prefix, name) }
	switch {
	case p.ID == "":
		l.add(f("id"), "", "required")
	case !reID.MatchString(p.ID):
		l.add(f("id"), p.ID, "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	switch {
	case p.Hostname == "":
		l.add(f("hostname"), "", "required")
	case !reHostname.MatchString(p.Hostname):
		l.add(f("hostname"), p.Hostname, "must be a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
	}
	switch {
	case p.Role == "":
		l.add(f("role"), "", "required (one of %s)", roleList())
	case !validRole(p.Role):
		l.add(f("role"), string(p.Role), "unknown role; want one of %s", roleList())
	}
	switch _, ok := Models[p.Model]; {
	case p.Model == "":
		l.add(f("model"), "", "required (one of %s)", modelList())
	case !ok:
		l.add(f("model"), string(p.Model), "unknown model; want one of %s", modelList())
	}
	if p.Serial != "" && !reSerial.MatchString(p.Serial) {
		l.add(f("serial"), p.Serial, "must be 1-64 letters, digits or '-'")
	}
	switch {
	case p.Site == "":
		l.add(f("site"), "", "required")
	case !reName.MatchString(p.Site):
		l.add(f("site"), p.Site, "must be 1-63 lowercase letters, digits, '.', '_' or '-'")
	}
	for _, k := range sortedKeys(p.Labels) {
		if !reLabelKey.MatchString(k) {
			l.add(f("labels"), k, "bad label key: want 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit")
		}
		if v := p.Labels[k]; !reLabelVal.MatchString(v) {
			l.add(f("labels."+k), v, "bad label value: want up to 63 letters, digits, '.', '_' or '-'")
		}
	}
	p.Network.check(l, f("network"), p.Model)
	if p.User != "" && !reUser.MatchString(p.User) {
		l.add(f("user"), p.User, "must be a Linux user name: lowercase letters, digits, '_' or '-', up to 32")
	}
	for i, k := range p.SSHKeys {
		if err := checkSSHKey(k); err != nil {
			l.add(fmt.Sprintf("%s[%d]", f("ssh_keys"), i), abbreviate(k), "%v", err)
		}
	}
	if p.Timezone != "" && (!reTimezone.MatchString(p.Timezone) || strings.Contains(p.Timezone, "..")) {
		l.add(f("timezone"), p.Timezone, "not an IANA time zone name like Europe/Berlin or UTC")
	}
	if p.Locale != "" && !reLocale.MatchString(p.Locale) {
		l.add(f("locale"), p.Locale, "not a UTF-8 locale like en_US.UTF-8 or C.UTF-8")
	}
	for i, s := range p.NTP {
		if _, err := netip.ParseAddr(s); err != nil && !reNTPServer.MatchString(s) {
			l.add(fmt.Sprintf("%s[%d]", f("ntp"), i), s, "not an IP address or host name")
		}
	}
	for i, pkg := range p.Packages {
		if !rePackage.MatchString(pkg) {
			l.add(fmt.Sprintf("%s[%d]", f("packages"), i), pkg, "not a Debian package name")
		}
	}
	for i, s := range p.Services {
		if !reService.MatchString(s) {
			l.add(fmt.Sprintf("%s[%d]", f("services"), i), s, "not a systemd unit name")
		}
	}
	for _, k := range sortedKeys(p.Environment) {
		if !reEnvKey.MatchString(k) {
			l.add(f("environment"), k, "bad variable name: want letters, digits and '_', not starting with a digit")
		}
		if v := p.Environment[k]; strings.ContainsAny(v, "\x00\r\n") {
			l.add(f("environment."+k), "", "value must be one line")
		}
	}
}

func (n *Network) check(l *errList, prefix string, model Model) {
	f := func(name string) string { return join(prefix, name) }
	switch {
	case n.Interface == "":
		l.add(f("interface"), "", "required (for example eth0 or wlan0)")
	case !reIfname.MatchString(n.Interface):
		l.add(f("interface"), n.Interface, "not a Linux interface name (1-15 letters, digits, '_' or '-')")
	}
	var prefixAddr netip.Prefix
	switch {
	case n.dhcp():
		if n.Address != "" {
			l.add(f("address"), n.Address, "dhcp is true: drop address or set dhcp: false")
		}
		if n.Gateway != "" {
			l.add(f("gateway"), n.Gateway, "dhcp is true: drop gateway or set dhcp: false")
		}
		if len(n.DNS) > 0 {
			l.add(f("dns"), strings.Join(n.DNS, ","), "dhcp is true: drop dns or set dhcp: false")
		}
	case n.Address == "":
		if n.DHCP == nil {
			l.add(f("address"), "", "required unless dhcp: true")
		} else {
			l.add(f("address"), "", "required with dhcp: false (static addressing)")
		}
	default:
		pfx, err := parseHostPrefix(n.Address)
		if err != nil {
			l.add(f("address"), n.Address, "%v", err)
		} else {
			prefixAddr = pfx
		}
	}
	if n.Gateway != "" && !n.dhcp() {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || gw.Zone() != "":
			l.add(f("gateway"), n.Gateway, "not an IP address")
		case prefixAddr.IsValid() && gw.Is4() != prefixAddr.Addr().Is4():
			l.add(f("gateway"), n.Gateway, "address family differs from address %s", n.Address)
		case prefixAddr.IsValid() && !prefixAddr.Masked().Contains(gw):
			l.add(f("gateway"), n.Gateway, "not inside %s", prefixAddr.Masked())
		case prefixAddr.IsValid() && gw == prefixAddr.Addr():
			l.add(f("gateway"), n.Gateway, "is the device's own address")
		}
	}
	if !n.dhcp() {
		for i, d := range n.DNS {
			if a, err := netip.ParseAddr(d); err != nil || a.Zone() != "" || a.IsUnspecified() {
				l.add(fmt.Sprintf("%s[%d]", f("dns"), i), d, "not an IP address")
			}
		}
	}
	if n.VLAN != nil {
		switch v := *n.VLAN; {
		case v < 1 || v > 4094:
			l.add(f("vlan"), strconv.Itoa(v), "VLAN id out of range 1-4094")
		case n.isWireless():
			l.add(f("vlan"), strconv.Itoa(v), "VLANs need a wired interface, not %s", n.Interface)
		case len(n.Interface)+1+len(strconv.Itoa(v)) > 15:
			l.add(f("vlan"), strconv.Itoa(v), "interface name %s.%d is longer than 15 characters", n.Interface, v)
		}
	}
	if n.isWireless() && n.WiFi == nil {
		l.add(f("wifi"), "", "required when interface %s is wireless", n.Interface)
	}
	if w := n.WiFi; w != nil {
		wf := func(name string) string { return join(f("wifi"), name) }
		switch {
		case w.SSID == "":
			l.add(wf("ssid"), "", "required")
		case len(w.SSID) > 32:
			l.add(wf("ssid"), w.SSID, "longer than 32 bytes")
		case strings.ContainsAny(w.SSID, "\x00\r\n"):
			l.add(wf("ssid"), "", "must be one line")
		}
		if w.Password != "" && !validPSK(w.Password) {
			// Never echo the password.
			l.add(wf("password"), "", "a WPA passphrase is 8-63 printable ASCII characters (or 64 hex digits); omit it for an open network")
		}
		if w.Interface != "" {
			switch {
			case !reIfname.MatchString(w.Interface):
				l.add(wf("interface"), w.Interface, "not a Linux interface name")
			case n.isWireless() && w.Interface != n.Interface:
				l.add(wf("interface"), w.Interface, "differs from network.interface %s", n.Interface)
			case w.Interface == n.Interface && !n.isWireless():
				l.add(wf("interface"), w.Interface, "is the wired interface")
			}
		}
		if mi, ok := Models[model]; ok && !mi.WiFi {
			l.add(f("wifi"), "", "model %s has no Wi-Fi", model)
		}
	}
}

// parseHostPrefix parses "addr/len", the form profiles use for a static
// address, with messages an operator can act on.
func parseHostPrefix(s string) (netip.Prefix, error) {
	a, bitsStr, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, errors.New("must carry the prefix length, like 10.20.0.11/24")
	}
	addr, err := netip.ParseAddr(a)
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, errors.New("not an IP address")
	}
	bits, err := strconv.Atoi(bitsStr)
	if err != nil || bitsStr != strconv.Itoa(bits) {
		return netip.Prefix{}, errors.New("prefix length is not a number")
	}
	if bits < 1 || bits > addr.BitLen() {
		return netip.Prefix{}, errors.New("prefix length out of range")
	}
	if addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() {
		return netip.Prefix{}, errors.New("not a usable host address")
	}
	p := netip.PrefixFrom(addr, bits)
	if addr.Is4() && bits <= 30 {
		if addr == p.Masked().Addr() {
			return netip.Prefix{}, errors.New("is the network address of its subnet")
		}
		if addr == lastAddr(p) {
			return netip.Prefix{}, errors.New("is the broadcast address of its subnet")
		}
	}
	return p, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func validPSK(s string) bool {
	if len(s) == 64 {
		for i := 0; i < len(s); i++ {
			if !strings.ContainsRune("0123456789abcdefABCDEF", rune(s[i])) {
				return false
			}
		}
		return true
	}
	if len(s) < 8 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkSSHKey checks an authorized_keys line: a known type, a base64 blob
// whose embedded type matches it, and an optional comment. Options before the
// type (from="...") are not accepted.
func checkSSHKey(line string) error {
	if strings.ContainsAny(line, "\r\n\x00") {
		return errors.New("must be one line")
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return errors.New("want \"TYPE BASE64 [COMMENT]\"")
	}
	typ := fields[0]
	if !sshKeyTypes[typ] {
		return fmt.Errorf("unsupported key type %q", typ)
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return errors.New("key data is not base64")
	}
	if len(blob) < 4 {
		return errors.New("key data too short")
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return fmt.Errorf("key data is not a %s key", typ)
	}
	if typ == "ssh-ed25519" && len(blob) != 4+len(typ)+4+32 {
		return errors.New("ed25519 key data has the wrong length")
	}
	return nil
}

// abbreviate keeps long values readable in errors.
func abbreviate(s string) string {
	if len(s) <= 40 {
		return s
	}
	return s[:37] + "..."
}

func validRole(r Role) bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

func modelList() string {
	s := make([]string, 0, len(Models))
	for m := range Models {
		s = append(s, string(m))
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ValidateFleet validates every profile and what must hold across them:
// unique ids, hostnames and static addresses.
func ValidateFleet(ps []Profile) error {
	var l errList
	seenID := map[string]int{}
	seenHost := map[string]int{}
	seenAddr := map[netip.Addr]int{}
	for i := range ps {
		prefix := fmt.Sprintf("devices[%d]", i)
		ps[i].check(&l, prefix)
		p := &ps[i]
		if j, dup := seenID[p.ID]; dup && p.ID != "" {
			l.add(prefix+".id", p.ID, "duplicate: also devices[%d]", j)
		} else {
			seenID[p.ID] = i
		}
		if j, dup := seenHost[p.Hostname]; dup && p.Hostname != "" {
			l.add(prefix+".hostname", p.Hostname, "duplicate: also devices[%d]", j)
		} else {
			seenHost[p.Hostname] = i
		}
		if pfx, err := parseHostPrefix(p.Network.Address); err == nil && !p.Network.dhcp() {
			if j, dup := seenAddr[pfx.Addr()]; dup {
				l.add(prefix+".network.address", p.Network.Address, "duplicate: also devices[%d]", j)
			} else {
				seenAddr[pfx.Addr()] = i
			}
		}
	}
	return l.err()
}
