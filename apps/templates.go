package apps

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

//go:embed templates/*.yaml
var templateFS embed.FS

// TemplateNames lists the built-in templates, sorted.
func TemplateNames() []string {
	entries, err := fs.ReadDir(templateFS, "templates")
	if err != nil {
		panic("apps: embedded templates: " + err.Error())
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	slices.Sort(names)
	return names
}

// TemplateYAML returns a built-in template as written, comments included:
// what `fleetmesh apps template NAME` prints for an operator to edit.
func TemplateYAML(name string) ([]byte, error) {
	if !slices.Contains(TemplateNames(), name) {
		return nil, fmt.Errorf("no template %q; there are: %s", name, strings.Join(TemplateNames(), ", "))
	}
	return templateFS.ReadFile(path.Join("templates", name+".yaml"))
}

// Template returns a built-in template as a parsed manifest.
func Template(name string) (*Manifest, error) {
	data, err := TemplateYAML(name)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}
