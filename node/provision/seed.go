package provision

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"gopkg.in/yaml.v3"
)

// Where things go on the device.
const (
	// BootBinaryName is the fleetmesh binary's name in the boot partition,
	// which Ubuntu for the Pi mounts at BootMount.
	BootBinaryName = "fleetmesh"
	BootMount      = "/boot/firmware"
	BinaryPath     = "/usr/local/bin/fleetmesh"
	DataDir        = "/var/lib/fleetmesh"
	DeviceJSONPath = "/etc/fleetmesh/device.json"
	EnvFilePath    = "/etc/fleetmesh/environment"
	UnitPath       = "/etc/systemd/system/fleetmesh.service"
)

// Seed file names, as cloud-init's NoCloud datasource reads them.
const (
	UserDataFile      = "user-data"
	MetaDataFile      = "meta-data"
	NetworkConfigFile = "network-config"
)

// Seed is a cloud-init NoCloud seed for one device. UserData holds the join
// token's secret (and NetworkConfig the Wi-Fi passphrase): write them 0600.
type Seed struct {
	Hostname      string
	UserData      []byte
	MetaData      []byte
	NetworkConfig []byte
}

// Files returns the seed's files by name.
func (s *Seed) Files() map[string][]byte {
	return map[string][]byte{
		UserDataFile:      s.UserData,
		MetaDataFile:      s.MetaData,
		NetworkConfigFile: s.NetworkConfig,
	}
}

// GenerateSeed renders the seed of a valid profile. Output is deterministic:
// the same profile and token give the same bytes.
func GenerateSeed(p *Profile, tok jointoken.Token) (*Seed, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := tok.Validate(); err != nil {
		return nil, err
	}
	userData, err := renderUserData(p, tok)
	if err != nil {
		return nil, err
	}
	netCfg, err := marshalYAML(networkConfig(p))
	if err != nil {
		return nil, err
	}
	// A new instance-id makes cloud-init run again, so it changes whenever
	// the seed does (re-provisioning a card re-applies it).
	h := sha256.New()
	h.Write(userData)
	h.Write(netCfg)
	iid := "fleetmesh-" + p.ID + "-" + hex.EncodeToString(h.Sum(nil))[:12]
	metaData, err := marshalYAML(metaData{InstanceID: iid, LocalHostname: p.Hostname})
	if err != nil {
		return nil, err
	}
	return &Seed{Hostname: p.Hostname, UserData: userData, MetaData: metaData, NetworkConfig: netCfg}, nil
}

type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

type cloudConfig struct {
	Hostname         string      `yaml:"hostname"`
	PreserveHostname bool        `yaml:"preserve_hostname"`
	ManageEtcHosts   bool        `yaml:"manage_etc_hosts"`
	Users            []ccUser    `yaml:"users"`
	DisableRoot      bool        `yaml:"disable_root"`
	SSHPwauth        bool        `yaml:"ssh_pwauth"`
	Timezone         string      `yaml:"timezone,omitempty"`
	Locale           string      `yaml:"locale,omitempty"`
	NTP              ccNTP       `yaml:"ntp"`
	PackageUpdate    bool        `yaml:"package_update,omitempty"`
	Packages         []string    `yaml:"packages,omitempty"`
	WriteFiles       []ccFile    `yaml:"write_files"`
	Runcmd           [][]string  `yaml:"runcmd"`
	PowerState       ccPowerStat `yaml:"power_state"`
}

type ccUser struct {
	Name              string   `yaml:"name"`
	Gecos             string   `yaml:"gecos"`
	Groups            []string `yaml:"groups"`
	Shell             string   `yaml:"shell"`
	Sudo              string   `yaml:"sudo"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys,omitempty"`
}

type ccNTP struct {
	Enabled   bool     `yaml:"enabled"`
	NTPClient string   `yaml:"ntp_client"`
	Servers   []string `yaml:"servers,omitempty"`
}

type ccFile struct {
	Path        string `yaml:"path"`
	Content     string `yaml:"content"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
}

type ccPowerStat struct {
	Mode      string `yaml:"mode"`
	Message   string `yaml:"message"`
	Timeout   int    `yaml:"timeout"`
	Condition bool   `yaml:"condition"`
}

// DeviceInfo is /etc/fleetmesh/device.json (mode 0644): the profile as the
// device sees it, without secrets. The environment, which may hold some,
// is only in /etc/fleetmesh/environment (0600).
type DeviceInfo struct {
	ID       string            `json:"id"`
	Hostname string            `json:"hostname"`
	Role     Role              `json:"role"`
	Model    Model             `json:"model"`
	Arch     string            `json:"arch"`
	Serial   string            `json:"serial,omitempty"`
	Site     string            `json:"site"`
	Labels   map[string]string `json:"labels,omitempty"`
	Packages []string          `json:"packages,omitempty"`
	Services []string          `json:"services,omitempty"`
}

func renderUserData(p *Profile, tok jointoken.Token) ([]byte, error) {
	info, err := json.MarshalIndent(DeviceInfo{
		ID: p.ID, Hostname: p.Hostname, Role: p.Role, Model: p.Model, Arch: p.GOARCH(),
		Serial: p.Serial, Site: p.Site, Labels: p.Labels,
		Packages: p.Packages, Services: p.Services,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	cc := cloudConfig{
		Hostname:         p.Hostname,
		PreserveHostname: false,
		ManageEtcHosts:   true,
		Users: []ccUser{{
			Name:              p.UserName(),
			Gecos:             "fleetmesh operator",
			Groups:            []string{"adm", "sudo", "dialout"},
			Shell:             "/bin/bash",
			Sudo:              "ALL=(ALL) NOPASSWD:ALL",
			LockPasswd:        true,
			SSHAuthorizedKeys: p.SSHKeys,
		}},
		DisableRoot:   true,
		SSHPwauth:     false,
		Timezone:      p.Timezone,
		Locale:        p.Locale,
		NTP:           ccNTP{Enabled: true, NTPClient: "systemd-timesyncd", Servers: p.NTP},
		PackageUpdate: len(p.Packages) > 0,
		Packages:      p.Packages,
		WriteFiles: []ccFile{
			{Path: DeviceJSONPath, Content: string(info) + "\n", Owner: "root:root", Permissions: "0644"},
			{Path: EnvFilePath, Content: envFile(p.Environment), Owner: "root:root", Permissions: "0600"},
			{Path: UnitPath, Content: unitFile(p, tok), Owner: "root:root", Permissions: "0600"},
		},
		Runcmd: [][]string{
			// The image carries the binary in the boot partition; a seed used
			// on its own expects it already installed.
			{"sh", "-c", "if [ -f " + BootMount + "/" + BootBinaryName + " ]; then install -m 0755 " + BootMount + "/" + BootBinaryName + " " + BinaryPath + "; fi; test -x " + BinaryPath},
			{"systemctl", "daemon-reload"},
			{"systemctl", "enable", "fleetmesh.service"},
		},
		PowerState: ccPowerStat{Mode: "reboot", Message: "fleetmesh: provisioning done, rebooting", Timeout: 30, Condition: true},
	}
	for _, s := range p.Services {
		cc.Runcmd = append(cc.Runcmd, []string{"systemctl", "enable", s})
	}
	body, err := marshalYAML(cc)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), body...), nil
}

// AgentArgs is the fleetmesh agent command line the unit runs. It holds the
// token's secret.
func AgentArgs(p *Profile, tok jointoken.Token) []string {
	args := []string{BinaryPath, "agent", "--join", tok.String(), "--name", p.Hostname, "--role", string(p.Role), "--site", p.Site}
	for _, k := range sortedKeys(p.Labels) {
		args = append(args, "--label", k+"="+p.Labels[k])
	}
	return append(args, "--data-dir", DataDir)
}

func unitFile(p *Profile, tok jointoken.Token) string {
	quoted := make([]string, 0, 16)
	for _, a := range AgentArgs(p, tok) {
		quoted = append(quoted, systemdQuote(a))
	}
	return strings.Join([]string{
		"# Written by fleetmesh provision. Holds the join token: keep it 0600.",
		"[Unit]",
		"Description=fleetmesh agent",
		"Wants=network-online.target",
		"After=network-online.target time-sync.target",
		"",
		"[Service]",
		"EnvironmentFile=-" + EnvFilePath,
		"ExecStart=" + strings.Join(quoted, " "),
		"Restart=always",
		"RestartSec=5",
		"",
		"[Install]",
		"WantedBy=multi-user.target",
		"",
	}, "\n")
}

// systemdQuote makes one ExecStart argument: '%' and '$' are escaped (systemd
// expands specifiers and variables), and anything beyond a safe set is
// double-quoted.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:=,@[]%$+", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// envFile renders a systemd EnvironmentFile.
func envFile(env map[string]string) string {
	var b strings.Builder
	b.WriteString("# Written by fleetmesh provision from the device profile.\n")
	for _, k := range sortedKeys(env) {
		b.WriteString(k + "=\"" + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(env[k]) + "\"\n")
	}
	return b.String()
}

// netplan version 2, as cloud-init's network-config.
type netplanConfig struct {
	Version   int                      `yaml:"version"`
	Ethernets map[string]*netplanIface `yaml:"ethernets,omitempty"`
	VLANs     map[string]*netplanIface `yaml:"vlans,omitempty"`
	WiFis     map[string]*netplanIface `yaml:"wifis,omitempty"`
}

type netplanIface struct {
	ID           *int                          `yaml:"id,omitempty"`
	Link         string                        `yaml:"link,omitempty"`
	DHCP4        *bool                         `yaml:"dhcp4,omitempty"`
	DHCP6        *bool                         `yaml:"dhcp6,omitempty"`
	Addresses    []string                      `yaml:"addresses,omitempty"`
	Routes       []netplanRoute                `yaml:"routes,omitempty"`
	Nameservers  *netplanNS                    `yaml:"nameservers,omitempty"`
	Optional     bool                          `yaml:"optional,omitempty"`
	AccessPoints map[string]netplanAccessPoint `yaml:"access-points,omitempty"`
}

type netplanRoute struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
}

type netplanNS struct {
	Addresses []string `yaml:"addresses"`
}

type netplanAccessPoint struct {
	Password string `yaml:"password,omitempty"`
}

func networkConfig(p *Profile) netplanConfig {
	n := &p.Network
	nc := netplanConfig{Version: 2}
	primary := &netplanIface{}
	if n.dhcp() {
		primary.DHCP4 = boolPtr(true)
	} else {
		pfx, _ := parseHostPrefix(n.Address) // validated
		primary.DHCP4 = boolPtr(false)
		if pfx.Addr().Is6() {
			primary.DHCP6 = boolPtr(false)
		}
		primary.Addresses = []string{pfx.String()}
		if n.Gateway != "" {
			primary.Routes = []netplanRoute{{To: "default", Via: n.Gateway}}
		}
		if len(n.DNS) > 0 {
			ns := make([]string, len(n.DNS))
			for i, d := range n.DNS {
				ns[i] = netip.MustParseAddr(d).String()
			}
			primary.Nameservers = &netplanNS{Addresses: ns}
		}
	}
	wifi := func(ifc *netplanIface) {
		ap := netplanAccessPoint{Password: n.WiFi.Password}
		ifc.AccessPoints = map[string]netplanAccessPoint{n.WiFi.SSID: ap}
		nc.WiFis = map[string]*netplanIface{n.wifiInterface(): ifc}
	}
	switch {
	case n.isWireless():
		wifi(primary)
	case n.VLAN != nil:
		nc.Ethernets = map[string]*netplanIface{n.Interface: {DHCP4: boolPtr(false), Optional: true}}
		primary.ID = intPtr(*n.VLAN)
		primary.Link = n.Interface
		nc.VLANs = map[string]*netplanIface{n.Interface + "." + strconv.Itoa(*n.VLAN): primary}
	default:
		nc.Ethernets = map[string]*netplanIface{n.Interface: primary}
	}
	if n.WiFi != nil && !n.isWireless() {
		// A second uplink: DHCP, and optional so boot never waits for it.
		wifi(&netplanIface{DHCP4: boolPtr(true), Optional: true})
	}
	return nc
}

func marshalYAML(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
