package apps

import (
	"strings"
	"testing"
)

func TestTemplatesValidate(t *testing.T) {
	want := map[string]string{"mosquitto": "gateway", "node-red": "gateway", "telegraf": "sensor", "k3s": "compute"}
	names := TemplateNames()
	if len(names) != len(want) {
		t.Errorf("templates = %v", names)
	}
	for _, name := range names {
		m, err := Template(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := m.Validate(ValidateOptions{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if m.Metadata.Name != name || m.Spec.Selector.Role != want[name] {
			t.Errorf("%s: name %q role %q", name, m.Metadata.Name, m.Spec.Selector.Role)
		}
		if _, err := Resolve(m, NodeInfo{Name: "n1", Role: want[name]}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := TemplateYAML("nginx"); err == nil || !strings.Contains(err.Error(), "mosquitto") {
		t.Errorf("unknown template: %v", err)
	}
}
