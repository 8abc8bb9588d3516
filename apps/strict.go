package apps

import (
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var typeOfManifest = reflect.TypeOf(Manifest{})

// shortFormTypes may be written as a scalar (their short form) or as a
// mapping of their fields (the long form).
var shortFormTypes = map[reflect.Type]bool{
	reflect.TypeOf(PortSpec{}):   true,
	reflect.TypeOf(VolumeSpec{}): true,
}

// checkKnownFields walks a YAML tree against the Go type it will be decoded
// into, and reports unknown fields and values of the wrong kind with their
// field path. yaml.v3's KnownFields reports only line numbers and is not
// applied inside custom unmarshalers; this check covers both.
func checkKnownFields(n *yaml.Node, t reflect.Type, path string, errs *FieldErrors) {
	budget := maxNodes
	checkNode(n, t, path, errs, &budget)
}

// maxNodes bounds the walk: aliases can make a small document a huge (or
// cyclic) tree. No real manifest comes near it.
const maxNodes = 100_000

func checkNode(n *yaml.Node, t reflect.Type, path string, errs *FieldErrors, budget *int) {
	if *budget--; *budget < 0 {
		if *budget == -1 {
			errs.add(path, "document too large or too deeply aliased")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	at := func() string {
		if path == "" {
			return "(top level)"
		}
		return path
	}
	if shortFormTypes[t] && n.Kind == yaml.ScalarNode {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			errs.add(at(), "must be a mapping, not %s", describe(n))
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			child := join(path, k.Value)
			if !ok {
				errs.add(child, "unknown field%s", suggest(k.Value, fields))
				continue
			}
			checkNode(v, f.Type, child, errs, budget)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			errs.add(at(), "must be a list, not %s", describe(n))
			return
		}
		for i, e := range n.Content {
			checkNode(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", errs, budget)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			errs.add(at(), "must be a mapping, not %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs, budget)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			errs.add(at(), "must be a string, not %s", describe(n))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			errs.add(at(), "%s is not a whole number", describe(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			errs.add(at(), "%s is not true or false", describe(n))
		}
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f
	}
	return out
}

// suggest names a known field that differs from key only in case, the most
// common slip ("restartpolicy", "HostPort").
func suggest(key string, fields map[string]reflect.StructField) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return "; did you mean " + strconv.Quote(name) + "?"
		}
	}
	return ""
}
