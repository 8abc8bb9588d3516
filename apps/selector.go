package apps

import "slices"

// Roles a device may have.
var Roles = []string{"gateway", "sensor", "compute", "storage", "hybrid"}

// NodeInfo is what a selector and an env valueFrom can see of a device.
type NodeInfo struct {
	Name   string
	Role   string
	Site   string
	Labels map[string]string
}

// Selector picks the devices an application runs on. Every criterion that
// is set must hold (they are ANDed); an empty selector matches every device,
// like a DaemonSet without a node selector.
type Selector struct {
	Role   string            `yaml:"role,omitempty" json:"role,omitempty"`
	Site   string            `yaml:"site,omitempty" json:"site,omitempty"`
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// Nodes lists device names; when set, only those devices match.
	Nodes []string `yaml:"nodes,omitempty" json:"nodes,omitempty"`
}

// Matches reports whether the selector picks node n.
func (s Selector) Matches(n NodeInfo) bool {
	if s.Role != "" && s.Role != n.Role {
		return false
	}
	if s.Site != "" && s.Site != n.Site {
		return false
	}
	for k, v := range s.Labels {
		got, ok := n.Labels[k]
		if !ok || got != v {
			return false
		}
	}
	if len(s.Nodes) > 0 && !slices.Contains(s.Nodes, n.Name) {
		return false
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
