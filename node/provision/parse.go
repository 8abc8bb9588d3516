package provision

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxProfileFile bounds what is read from a profile or fleet file.
const maxProfileFile = 16 << 20

// Fleet is what a profile file holds: one device, or many.
type Fleet struct {
	Devices []Profile
	// Single is true for a file that describes one device (a YAML mapping);
	// its seed goes straight into the output directory instead of one
	// directory per device.
	Single bool
}

// LoadFile reads and validates a profile or fleet file. A name ending in .csv
// is CSV; anything else is YAML (a mapping for one device, a sequence for a
// fleet).
func LoadFile(path string) (*Fleet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxProfileFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxProfileFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxProfileFile)
	}
	var fl *Fleet
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		fl, err = ParseCSV(bytes.NewReader(data))
	} else {
		fl, err = ParseYAML(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fl, nil
}

// ParseYAML parses and validates one profile (a mapping) or a fleet (a
// sequence of mappings). Unknown keys, wrong types and invalid values are all
// reported with their field paths.
func ParseYAML(data []byte) (*Fleet, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ValidationError{Errs: []FieldError{{Path: "(file)", Msg: "empty: no device profile"}}}
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &ValidationError{Errs: []FieldError{{Path: "(file)", Msg: "more than one YAML document"}}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}

	var l errList
	fl := &Fleet{}
	switch root.Kind {
	case yaml.MappingNode:
		fl.Single = true
		checkNode(&l, root, "", reflect.TypeOf(Profile{}))
	case yaml.SequenceNode:
		if len(root.Content) == 0 {
			l.add("devices", "", "empty fleet file")
		}
		for i, n := range root.Content {
			checkNode(&l, n, fmt.Sprintf("devices[%d]", i), reflect.TypeOf(Profile{}))
		}
	default:
		l.add("(file)", "", "want a device profile (mapping) or a list of them (line %d)", root.Line)
	}
	if err := l.err(); err != nil {
		return nil, err
	}

	// The walk above has named every unknown key and type mismatch with its
	// path; the strict decode is the one that fills the structs.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	var err error
	if fl.Single {
		var p Profile
		err = strict.Decode(&p)
		fl.Devices = []Profile{p}
	} else {
		err = strict.Decode(&fl.Devices)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	if fl.Single {
		if err := fl.Devices[0].Validate(); err != nil {
			return nil, err
		}
		return fl, nil
	}
	if err := ValidateFleet(fl.Devices); err != nil {
		return nil, err
	}
	return fl, nil
}

// checkNode walks a YAML node against the Go type it will decode into and
// reports unknown keys and kind mismatches by field path.
func checkNode(l *errList, n *yaml.Node, path string, t reflect.Type) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // unset
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	where := func() string { return fmt.Sprintf("(line %d)", n.Line) }
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			l.add(pathOr(path), "", "want a mapping %s", where())
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" { // <<: *common, or <<: [*a, *b]
				if v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						checkNode(l, m, path, t)
					}
				} else {
					checkNode(l, v, path, t)
				}
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				l.add(join(path, k.Value), "", "unknown key (line %d); known keys: %s", k.Line, knownKeys(t))
				continue
			}
			checkNode(l, v, join(path, k.Value), ft)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			l.add(pathOr(path), "", "want a mapping of key: value %s", where())
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				l.add(pathOr(path), "", "keys must be plain strings (line %d)", k.Line)
				continue
			}
			checkNode(l, v, path+"."+k.Value, t.Elem())
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			l.add(pathOr(path), "", "want a list %s", where())
			return
		}
		for i, c := range n.Content {
			checkNode(l, c, fmt.Sprintf("%s[%d]", path, i), t.Elem())
		}
	default:
		if n.Kind != yaml.ScalarNode {
			l.add(pathOr(path), "", "want a single value %s", where())
			return
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			want := t.Kind().String()
			if t.Kind() == reflect.Bool {
				want = "true or false"
			} else if t.Kind() == reflect.Int {
				want = "a whole number"
			}
			l.add(pathOr(path), n.Value, "want %s %s", want, where())
		}
	}
}

func pathOr(p string) string {
	if p == "" {
		return "(profile)"
	}
	return p
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		m[name] = sf.Type
	}
	return m
}

func knownKeys(t reflect.Type) string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return strings.Join(keys, ", ")
}

// boolPtr and intPtr build optional fields.
func boolPtr(b bool) *bool { return &b }
func intPtr(i int) *int    { return &i }
