package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleProfileAcceptedAsWritten(t *testing.T) {
	p := loadExample(t)
	if p.ID != "sensor-001" || p.Hostname != "edge-sensor-001" || p.Role != RoleSensor || p.Model != "Pi4" ||
		p.Serial != "SN0000000001" || p.Site != "plant-a" || p.Labels["line"] != "3" ||
		p.Network.Interface != "eth0" || p.Network.DHCP == nil || *p.Network.DHCP || p.Network.Address != "10.20.0.11/24" ||
		p.Network.Gateway != "10.20.0.1" || strings.Join(p.Network.DNS, ",") != "10.20.0.1,10.20.0.2" ||
		*p.Network.VLAN != 200 || p.Network.WiFi.SSID != "plant-iot" || p.Network.WiFi.Password != "correct horse" ||
		len(p.SSHKeys) != 1 || p.Timezone != "Europe/Berlin" || p.Locale != "en_US.UTF-8" ||
		len(p.Packages) != 2 || p.Services[0] != "telegraf" || p.Environment["SAMPLE_RATE"] != "10" {
		t.Fatalf("example parsed wrong: %+v", p)
	}
	if p.GOARCH() != "arm64" {
		t.Fatalf("Pi4 arch %s", p.GOARCH())
	}
}

func TestEveryModelHasAnArch(t *testing.T) {
	for _, m := range []Model{"Pi3B+", "Pi4", "Pi5", "CM4", "Zero2W"} {
		if Models[m].GOARCH != "arm64" {
			t.Errorf("%s: arch %q", m, Models[m].GOARCH)
		}
	}
}

// fleetWith is a three-device fleet whose device 2 has edit applied to the
// example profile's text.
func fleetWith(t *testing.T, edit func(string) string) string {
	var b strings.Builder
	for i, host := range []string{"dev-a", "dev-b", "dev-c"} {
		data, err := os.ReadFile("testdata/sensor-001.yaml")
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(data), "edge-sensor-001", host)
		s = strings.ReplaceAll(s, "id: sensor-001", "id: "+host)
		s = strings.ReplaceAll(s, "10.20.0.11/24", "10.20.0."+string(rune('1'+i))+"1/24")
		if i == 2 {
			s = edit(s)
		}
		lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
		for j, l := range lines {
			if j == 0 {
				b.WriteString("- " + l + "\n")
			} else {
				b.WriteString("  " + l + "\n")
			}
		}
	}
	return b.String()
}

func TestBadProfilesRefusedWithFieldPaths(t *testing.T) {
	r := strings.NewReplacer
	cases := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"prefix out of range", r("10.20.0.31/24", "10.0.0.1/33").Replace, `devices[2].network.address: "10.0.0.1/33": prefix length out of range`},
		{"address without prefix", r("10.20.0.31/24", "10.20.0.31").Replace, `devices[2].network.address: "10.20.0.31": must carry the prefix length`},
		{"bad address", r("10.20.0.31/24", "10.20.300.31/24").Replace, `devices[2].network.address: "10.20.300.31/24": not an IP address`},
		{"network address", r("10.20.0.31/24", "10.20.0.0/24").Replace, `devices[2].network.address: "10.20.0.0/24": is the network address`},
		{"gateway outside subnet", r("gateway: 10.20.0.1", "gateway: 10.99.0.1").Replace, `devices[2].network.gateway: "10.99.0.1": not inside 10.20.0.0/24`},
		{"vlan out of range", r("vlan: 200", "vlan: 4095").Replace, `devices[2].network.vlan: "4095": VLAN id out of range 1-4094`},
		{"vlan zero", r("vlan: 200", "vlan: 0").Replace, `devices[2].network.vlan: "0": VLAN id out of range`},
		{"vlan not a number", r("vlan: 200", "vlan: two").Replace, `devices[2].network.vlan: "two": want a whole number`},
		{"unknown role", r("role: sensor", "role: actuator").Replace, `devices[2].role: "actuator": unknown role; want one of gateway, sensor, compute, storage, hybrid`},
		{"unknown model", r("model: Pi4", "model: Pi2").Replace, `devices[2].model: "Pi2": unknown model`},
		{"wifi without ssid", r("{ssid: plant-iot, ", "{").Replace, `devices[2].network.wifi.ssid: required`},
		{"wifi short password", r(`"correct horse"`, "short").Replace, `devices[2].network.wifi.password: a WPA passphrase is 8-63`},
		{"bad hostname", r("hostname: dev-c", "hostname: Dev_C").Replace, `devices[2].hostname: "Dev_C": must be a DNS label`},
		{"hostname too long", r("hostname: dev-c", "hostname: "+strings.Repeat("a", 64)).Replace, `devices[2].hostname: "` + strings.Repeat("a", 64) + `": must be a DNS label`},
		{"duplicate hostname", r("hostname: dev-c", "hostname: dev-a").Replace, `devices[2].hostname: "dev-a": duplicate: also devices[0]`},
		{"duplicate address", r("10.20.0.31/24", "10.20.0.11/24").Replace, `devices[2].network.address: "10.20.0.11/24": duplicate: also devices[0]`},
		{"bad timezone", r("Europe/Berlin", "Berlin time").Replace, `devices[2].timezone: "Berlin time": not an IANA time zone name`},
		{"bad locale", r("en_US.UTF-8", "english").Replace, `devices[2].locale: "english": not a UTF-8 locale`},
		{"bad ssh key type", r("ssh-ed25519 AAAA", "ssh-dss AAAA").Replace, `devices[2].ssh_keys[0]: "ssh-dss AAAAC3NzaC1lZDI1NTE5AAAAIHkq0...": unsupported key type "ssh-dss"`},
		{"bad ssh key data", r("AAAAC3NzaC1lZDI1NTE5AAAAIHkq0", "AAAAB3NzaC1yc2EAAAADAQABAAABAQ").Replace, `devices[2].ssh_keys[0]`},
		{"static without address", r("  address: 10.20.0.31/24\n", "").Replace, `devices[2].network.address: required with dhcp: false`},
		{"dhcp with address", r("dhcp: false", "dhcp: true").Replace, `devices[2].network.address: "10.20.0.31/24": dhcp is true: drop address or set dhcp: false`},
		{"dhcp not a bool", r("dhcp: false", "dhcp: maybe").Replace, `devices[2].network.dhcp: "maybe": want true or false`},
		{"bad dns", r("10.20.0.2]", "dns.plant-a]").Replace, `devices[2].network.dns[1]: "dns.plant-a": not an IP address`},
		{"unknown key", r("timezone:", "timezon:").Replace, `devices[2].timezon: unknown key (line`},
		{"unknown nested key", r("ssid: plant-iot", "sid: plant-iot").Replace, `devices[2].network.wifi.sid: unknown key`},
		{"bad label key", r(`{line: "3"}`, `{"line 3": x}`).Replace, `devices[2].labels: "line 3": bad label key`},
		{"bad label value", r(`{line: "3"}`, `{line: "a b"}`).Replace, `devices[2].labels.line: "a b": bad label value`},
		{"bad env key", r("SENSOR_TYPE:", "1SENSOR:").Replace, `devices[2].environment: "1SENSOR": bad variable name`},
		{"bad package", r("i2c-tools", "I2C Tools").Replace, `devices[2].packages[1]: "I2C Tools": not a Debian package name`},
		{"missing site", r("site: plant-a\n", "").Replace, `devices[2].site: required`},
		{"wrong shape", r("packages: [python3-smbus, i2c-tools]", "packages: python3-smbus").Replace, `devices[2].packages: want a list (line`},
	}
	tok := testToken(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "fleet.yaml")
			os.WriteFile(src, []byte(fleetWith(t, c.edit)), 0o644)
			out := filepath.Join(dir, "seeds")
			fl, err := LoadFile(src)
			if err == nil {
				_, err = Provision(context.Background(), fl, tok, out, Options{})
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidProfile) {
				t.Errorf("error does not match ErrInvalidProfile: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, c.want)
			}
			if strings.Contains(err.Error(), "correct horse") || strings.Contains(err.Error(), tok.Secret) {
				t.Errorf("error leaks a secret: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("something was written: %v", entries)
			}
		})
	}
	if len(cases) < 15 {
		t.Fatal("too few cases")
	}
}

func TestFleetWithoutErrorsProvisionsOneDirPerDevice(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(src, []byte(fleetWith(t, func(s string) string { return s })), 0o644)
	fl, err := LoadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	reg := &recordingRegistrar{}
	out := filepath.Join(dir, "seeds")
	res, err := Provision(context.Background(), fl, testToken(t), out, Options{Registrar: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"dev-a", "dev-b", "dev-c"} {
		for _, f := range []string{UserDataFile, MetaDataFile, NetworkConfigFile} {
			st, err := os.Stat(filepath.Join(out, host, f))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("%s/%s mode %v", host, f, st.Mode().Perm())
			}
		}
	}
	if len(res.SeedDirs) != 3 || strings.Join(reg.ids, ",") != "dev-a,dev-b,dev-c" {
		t.Fatalf("seed dirs %v registered %v", res.SeedDirs, reg.ids)
	}
	// A second run into the same, now full, directory is refused.
	if _, err := Provision(context.Background(), fl, testToken(t), out, Options{}); !errors.Is(err, ErrOutputExists) {
		t.Fatalf("second run: %v", err)
	}
}

func TestRegistrarFailureWritesNothing(t *testing.T) {
	dir := t.TempDir()
	fl, err := LoadFile("testdata/sensor-001.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "seed")
	_, err = Provision(context.Background(), fl, testToken(t), out, Options{Registrar: &recordingRegistrar{fail: true}})
	if err == nil {
		t.Fatal("no error")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("written: %v", entries)
	}
}

type recordingRegistrar struct {
	ids  []string
	fail bool
}

func (r *recordingRegistrar) RegisterExpected(_ context.Context, p Profile) error {
	if r.fail {
		return errors.New("no quorum")
	}
	r.ids = append(r.ids, p.ID)
	return nil
}

func TestSingleProfileSeedGoesStraightIntoOut(t *testing.T) {
	fl, err := LoadFile("testdata/sensor-001.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "seed")
	os.Mkdir(out, 0o755) // an empty directory is fine
	tok := testToken(t)
	if _, err := Provision(context.Background(), fl, tok, out, Options{}); err != nil {
		t.Fatal(err)
	}
	ud, err := os.ReadFile(filepath.Join(out, UserDataFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ud), tok.String()) {
		t.Fatal("user-data lacks the token")
	}
}

const csvFleet = `# plant A, line 3
id,hostname,role,model,site,labels,interface,dhcp,address,gateway,dns,vlan,wifi_ssid,wifi_password,ssh_keys,timezone,locale,packages,services,environment
s-1,edge-s-1,sensor,Pi4,plant-a,line=3;zone=north,eth0,false,10.20.0.11/24,10.20.0.1,10.20.0.1;10.20.0.2,200,plant-iot,correct horse,` + testKey + `,Europe/Berlin,en_US.UTF-8,python3-smbus;i2c-tools,telegraf,SENSOR_TYPE=temperature;SAMPLE_RATE=10
g-1,edge-g-1,gateway,Pi5,plant-a,,eth0,true,,,,,,,,UTC,C.UTF-8,,,
w-1,edge-w-1,sensor,Zero2W,plant-a,,wlan0,true,,,,,"plant: iot",,,,,,,
`

func TestCSVFleet(t *testing.T) {
	fl, err := ParseCSV(strings.NewReader(csvFleet))
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Devices) != 3 || fl.Single {
		t.Fatalf("%d devices", len(fl.Devices))
	}
	p := fl.Devices[0]
	if p.Labels["zone"] != "north" || *p.Network.VLAN != 200 || len(p.Network.DNS) != 2 || p.Network.WiFi.Password != "correct horse" ||
		p.Environment["SAMPLE_RATE"] != "10" || len(p.SSHKeys) != 1 || len(p.Packages) != 2 {
		t.Fatalf("row 0 parsed wrong: %+v", p)
	}
	if !*fl.Devices[1].Network.DHCP || fl.Devices[2].Network.WiFi.SSID != "plant: iot" {
		t.Fatalf("rows 1-2: %+v", fl.Devices[1:])
	}
}

func TestCSVErrorsNameFieldPaths(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{strings.Replace(csvFleet, "line=3;zone=north", "line", 1), `devices[0].labels: "line": want key=value`},
		{strings.Replace(csvFleet, ",200,", ",9999,", 1), `devices[0].network.vlan: "9999": VLAN id out of range`},
		{strings.Replace(csvFleet, "eth0,true", "eth0,yes", 1), `devices[1].network.dhcp: "yes": want true or false`},
		{strings.Replace(csvFleet, "edge-g-1", "edge-s-1", 1), `devices[1].hostname: "edge-s-1": duplicate: also devices[0]`},
		{strings.Replace(csvFleet, ",environment\n", ",environment,colour\n", 1), `(header): "colour": unknown column`},
		{strings.Replace(csvFleet, "id,hostname,", "hostname,", 1), `(header)`},
	} {
		_, err := ParseCSV(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %s", err, c.want)
		}
	}
}

func TestYAMLShapes(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "empty",
		"just a string":       "want a device profile",
		"[]":                  "empty fleet file",
		"id: a\n---\nid: b\n": "more than one YAML document",
		"id: a\nid: b\n":      "already defined",
	} {
		_, err := ParseYAML([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

func TestYAMLAnchorsAndMergeKeys(t *testing.T) {
	fleet := `
- &base
  id: a
  hostname: a
  role: sensor
  model: Pi4
  site: plant-a
  network: &net {interface: eth0, dhcp: true}
  packages: &pkgs [i2c-tools]
- <<: *base
  id: b
  hostname: b
  network: *net
  packages: *pkgs
- <<: *base
  id: c
  hostname: c
  colour: red
`
	_, err := ParseYAML([]byte(fleet))
	if err == nil || !strings.Contains(err.Error(), "devices[2].colour: unknown key") {
		t.Fatalf("err = %v", err)
	}
	fl, err := ParseYAML([]byte(strings.Replace(fleet, "  colour: red\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Devices) != 3 || fl.Devices[2].Site != "plant-a" || fl.Devices[1].Packages[0] != "i2c-tools" {
		t.Fatalf("%+v", fl.Devices)
	}
}
