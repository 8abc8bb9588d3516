package provision

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkq0vXWx1QfX6dG2iS3Yc0n8w9m2QeL5aM7mV4Tt1qZ ops@plant"

// matrix is the set of profiles the seed tests render and hand to the real
// validators: every role and model, DHCP, static (v4 and v6), VLAN, Wi-Fi as
// primary and as second uplink, open Wi-Fi, and values that need quoting.
func matrix(t *testing.T) map[string]*Profile {
	ex := loadExample(t)
	base := func(host string, role Role, model Model, n Network) *Profile {
		return &Profile{
			ID: host, Hostname: host, Role: role, Model: model, Site: "plant-a",
			Network: n, SSHKeys: []string{testKey}, Timezone: "UTC", Locale: "C.UTF-8",
		}
	}
	m := map[string]*Profile{
		"example":        ex,
		"dhcp-gateway":   base("gw-1", RoleGateway, "Pi5", Network{Interface: "eth0", DHCP: boolPtr(true)}),
		"static-compute": base("c-1", RoleCompute, "CM4", Network{Interface: "eth0", DHCP: boolPtr(false), Address: "192.168.7.20/24"}),
		"wifi-dhcp":      base("s-2", RoleSensor, "Zero2W", Network{Interface: "wlan0", DHCP: boolPtr(true), WiFi: &WiFi{SSID: "plant-iot", Password: "correct horse"}}),
		"wifi-static": base("s-3", RoleSensor, "Zero2W", Network{Interface: "wlan0", Address: "10.30.0.5/16", Gateway: "10.30.0.1",
			DNS: []string{"10.30.0.1"}, WiFi: &WiFi{SSID: "line 3 wifi", Password: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}),
		"vlan-dhcp":   base("st-1", RoleStorage, "Pi4", Network{Interface: "eth0", DHCP: boolPtr(true), VLAN: intPtr(10)}),
		"vlan-max":    base("st-2", RoleStorage, "CM4", Network{Interface: "eth1", Address: "172.16.5.9/28", Gateway: "172.16.5.1", VLAN: intPtr(4094)}),
		"ipv6-static": base("h-1", RoleHybrid, "Pi3B+", Network{Interface: "eth0", Address: "2001:db8:10::11/64", Gateway: "2001:db8:10::1", DNS: []string{"2001:db8:10::53"}}),
		"open-wifi":   base("s-4", RoleSensor, "Pi3B+", Network{Interface: "eth0", DHCP: boolPtr(true), WiFi: &WiFi{SSID: "guest"}}),
		"hybrid-pi5":  base("h-2", RoleHybrid, "Pi5", Network{Interface: "end0", DHCP: boolPtr(true)}),
		"no-extras": {ID: "bare", Hostname: "bare", Role: RoleCompute, Model: "Pi4", Site: "plant-b",
			Network: Network{Interface: "eth0", DHCP: boolPtr(true)}},
		"quoting": {ID: "q-1", Hostname: "q-1", Role: RoleGateway, Model: "Pi4", Site: "plant-a",
			Labels:      map[string]string{"line": "3", "zone": "no", "cell": "007", "on": "true"},
			Network:     Network{Interface: "eth0", Address: "10.0.0.2/8", Gateway: "10.0.0.1", WiFi: &WiFi{SSID: "plant: iot #1", Password: `p@ss "word" $x`}},
			User:        "fleet",
			SSHKeys:     []string{testKey, testKey + "2"},
			NTP:         []string{"10.0.0.1", "ntp.plant-a.local"},
			Packages:    []string{"python3-smbus", "libc6=2.36-9"},
			Services:    []string{"telegraf", "mosquitto.service"},
			Environment: map[string]string{"A": `he said "hi" \o/ $HOME %h`, "YES": "yes", "EMPTY": ""}},
	}
	for name, p := range m {
		if err := p.Validate(); err != nil {
			t.Fatalf("matrix profile %s: %v", name, err)
		}
	}
	return m
}

func TestSeedMatrixPassesCloudInitSchema(t *testing.T) {
	needTool(t, "cloud-init")
	// The judge must be able to say no, or its yes means nothing.
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("#cloud-config\npower_state: {mode: explode}\n"), 0o600)
	if err := exec.Command("cloud-init", "schema", "--config-file", bad).Run(); err == nil {
		t.Fatal("cloud-init schema accepted an invalid power_state: it cannot judge")
	}
	tok := testToken(t)
	for name, p := range matrix(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := GenerateSeed(p, tok)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "user-data")
			os.WriteFile(f, s.UserData, 0o600)
			out, err := exec.Command("cloud-init", "schema", "--config-file", f).CombinedOutput()
			if err != nil {
				t.Fatalf("cloud-init schema: %v\n%s\n--- user-data:\n%s", err, out, s.UserData)
			}
			checkUserData(t, p, s)
		})
	}
}

// checkUserData checks what the schema cannot: the values that matter came
// through the YAML encoding intact.
func checkUserData(t *testing.T, p *Profile, s *Seed) {
	t.Helper()
	if !strings.HasPrefix(string(s.UserData), "#cloud-config\n") {
		t.Fatal("user-data does not start with #cloud-config")
	}
	var cc struct {
		Hostname   string `yaml:"hostname"`
		SSHPwauth  *bool  `yaml:"ssh_pwauth"`
		Timezone   string `yaml:"timezone"`
		Users      []map[string]any
		Packages   []string
		WriteFiles []struct {
			Path, Content, Permissions string
		} `yaml:"write_files"`
		Runcmd     [][]string
		PowerState map[string]any `yaml:"power_state"`
		NTP        map[string]any
	}
	if err := yaml.Unmarshal(s.UserData, &cc); err != nil {
		t.Fatal(err)
	}
	if cc.Hostname != p.Hostname || cc.SSHPwauth == nil || *cc.SSHPwauth || cc.Timezone != p.Timezone {
		t.Errorf("hostname/ssh_pwauth/timezone wrong: %+v", cc)
	}
	if cc.Users[0]["lock_passwd"] != true || cc.Users[0]["name"] != p.UserName() {
		t.Errorf("user: %v", cc.Users[0])
	}
	if cc.NTP["ntp_client"] != "systemd-timesyncd" || cc.PowerState["mode"] != "reboot" {
		t.Errorf("ntp %v power_state %v", cc.NTP, cc.PowerState)
	}
	files := map[string]string{}
	for _, f := range cc.WriteFiles {
		files[f.Path] = f.Content
		if f.Path == UnitPath && f.Permissions != "0600" {
			t.Errorf("unit file permissions %s", f.Permissions)
		}
	}
	unit := files[UnitPath]
	want := "--role " + string(p.Role) + " --site " + p.Site
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/fleetmesh agent --join fm1:") || !strings.Contains(unit, want) ||
		!strings.Contains(unit, "--data-dir /var/lib/fleetmesh") {
		t.Errorf("unit ExecStart wrong:\n%s", unit)
	}
	for k, v := range p.Labels {
		if !strings.Contains(unit, "--label "+k+"="+v) {
			t.Errorf("unit lacks label %s=%s", k, v)
		}
	}
	if !strings.Contains(files[DeviceJSONPath], `"hostname": "`+p.Hostname+`"`) {
		t.Errorf("device.json: %s", files[DeviceJSONPath])
	}
	if p.Network.WiFi != nil && p.Network.WiFi.Password != "" && strings.Contains(files[DeviceJSONPath], p.Network.WiFi.Password) {
		t.Error("device.json holds the Wi-Fi password")
	}
	for k, v := range p.Environment {
		if !strings.Contains(files[EnvFilePath], k+"=") {
			t.Errorf("environment file lacks %s", k)
		}
		if v != "" && strings.Contains(files[DeviceJSONPath], v) {
			t.Errorf("device.json (0644) holds environment value of %s", k)
		}
	}
	enabled := map[string]bool{}
	for _, c := range cc.Runcmd {
		if len(c) == 3 && c[0] == "systemctl" && c[1] == "enable" {
			enabled[c[2]] = true
		}
	}
	for _, svc := range append([]string{"fleetmesh.service"}, p.Services...) {
		if !enabled[svc] {
			t.Errorf("runcmd does not enable %s: %v", svc, cc.Runcmd)
		}
	}
	if strings.Join(cc.Packages, ",") != strings.Join(p.Packages, ",") {
		t.Errorf("packages %v", cc.Packages)
	}
}

func TestSeedMatrixPassesNetplan(t *testing.T) {
	needTool(t, "netplan")
	tok := testToken(t)
	for name, p := range matrix(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := GenerateSeed(p, tok)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			// cloud-init writes a v2 network-config as netplan's file
			// under a top-level "network" key.
			var v2 map[string]any
			if err := yaml.Unmarshal(s.NetworkConfig, &v2); err != nil {
				t.Fatal(err)
			}
			wrapped, _ := yaml.Marshal(map[string]any{"network": v2})
			os.MkdirAll(filepath.Join(root, "etc", "netplan"), 0o755)
			if err := os.WriteFile(filepath.Join(root, "etc", "netplan", "50-cloud-init.yaml"), wrapped, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("netplan", "generate", "--root-dir", root).CombinedOutput()
			if err != nil {
				t.Fatalf("netplan generate: %v\n%s\n--- network-config:\n%s", err, out, s.NetworkConfig)
			}
			nd := readAll(t, filepath.Join(root, "run", "systemd", "network"))
			n := p.Network
			if n.Address != "" {
				if !strings.Contains(nd, "Address="+n.Address) {
					t.Errorf("no Address=%s in networkd files:\n%s", n.Address, nd)
				}
				if n.Gateway != "" && !strings.Contains(nd, "Gateway="+n.Gateway) {
					t.Errorf("no Gateway=%s:\n%s", n.Gateway, nd)
				}
				for _, d := range n.DNS {
					if !strings.Contains(nd, "DNS="+d) {
						t.Errorf("no DNS=%s:\n%s", d, nd)
					}
				}
			} else if !strings.Contains(nd, "DHCP=ipv4") {
				t.Errorf("no DHCP=ipv4:\n%s", nd)
			}
			if n.VLAN != nil {
				want := "[VLAN]\nId=" + strconv.Itoa(*n.VLAN)
				if !strings.Contains(nd, want) || !strings.Contains(nd, "VLAN="+n.Interface+"."+strconv.Itoa(*n.VLAN)) {
					t.Errorf("no VLAN %d netdev or link:\n%s", *n.VLAN, nd)
				}
			}
			if n.WiFi != nil {
				wpa := readAll(t, filepath.Join(root, "run", "netplan"))
				if !strings.Contains(wpa, "ssid=\""+n.WiFi.SSID+"\"") {
					t.Errorf("no ssid %q in wpa_supplicant config:\n%s", n.WiFi.SSID, wpa)
				}
				if n.WiFi.Password != "" && len(n.WiFi.Password) < 64 && !strings.Contains(wpa, "psk=\""+n.WiFi.Password+"\"") {
					t.Errorf("psk missing:\n%s", wpa)
				}
				if n.WiFi.Password == "" && !strings.Contains(wpa, "key_mgmt=NONE") {
					t.Errorf("open network not key_mgmt=NONE:\n%s", wpa)
				}
			}
		})
	}
}

func readAll(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString("# " + e.Name() + "\n")
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String()
}

func TestSeedIsDeterministicAndInstanceIDFollowsContent(t *testing.T) {
	p := loadExample(t)
	tok := testToken(t)
	a, _ := GenerateSeed(p, tok)
	b, _ := GenerateSeed(p, tok)
	if string(a.UserData) != string(b.UserData) || string(a.MetaData) != string(b.MetaData) {
		t.Fatal("same input, different seed")
	}
	q := *p
	q.Packages = append([]string{"htop"}, p.Packages...)
	c, _ := GenerateSeed(&q, tok)
	if string(c.MetaData) == string(a.MetaData) {
		t.Fatal("instance-id did not change with the user-data: cloud-init would not re-run")
	}
	var md map[string]string
	yaml.Unmarshal(a.MetaData, &md)
	if md["local-hostname"] != p.Hostname || !strings.HasPrefix(md["instance-id"], "fleetmesh-"+p.ID+"-") {
		t.Fatalf("meta-data %v", md)
	}
}

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"a b":          `"a b"`,
		"50%":          "50%%",
		"$HOME":        "$$HOME",
		`q"uo\te`:      `"q\"uo\\te"`,
		"line=3":       "line=3",
		"[::1]:7400,x": "[::1]:7400,x",
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
