package provision

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"gopkg.in/yaml.v3"
)

// FuzzParseProfiles: parsing never panics; what it accepts is valid and
// renders to a seed whose YAML parses back; what it refuses is refused as
// an invalid profile.
func FuzzParseProfiles(f *testing.F) {
	example, err := os.ReadFile("testdata/sensor-001.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example, false)
	f.Add([]byte("- "+strings.ReplaceAll(strings.TrimSpace(string(example)), "\n", "\n  ")+"\n"), false)
	f.Add([]byte("id: a\nhostname: a\nrole: gateway\nmodel: Pi5\nsite: s\nnetwork: {interface: eth0, dhcp: true}\n"), false)
	f.Add([]byte("id: a\nnetwork: {vlan: &v 3, wifi: *v}\n"), false)
	f.Add([]byte(csvFleet), true)
	f.Add([]byte("id,hostname,role,model,site,interface,dhcp\nx,x,sensor,Pi4,s,wlan0,true\n"), true)
	tok, err := jointoken.New(testPin, []string{"10.0.0.1:7400"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, isCSV bool) {
		var fl *Fleet
		var err error
		if isCSV {
			fl, err = ParseCSV(strings.NewReader(string(data)))
		} else {
			fl, err = ParseYAML(data)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidProfile) {
				t.Fatalf("refused without ErrInvalidProfile: %v", err)
			}
			return
		}
		if err := ValidateFleet(fl.Devices); err != nil && !fl.Single {
			t.Fatalf("accepted an invalid fleet: %v", err)
		}
		for i := range fl.Devices {
			s, err := GenerateSeed(&fl.Devices[i], tok)
			if err != nil {
				t.Fatalf("accepted profile does not render: %v", err)
			}
			for name, b := range s.Files() {
				var v any
				if err := yaml.Unmarshal(b, &v); err != nil {
					t.Fatalf("%s is not YAML: %v\n%s", name, err, b)
				}
			}
		}
	})
}
