package provision

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CSV fleet files have a header row naming columns, in any order, and one
// device per row. Lines starting with '#' are comments. Nested fields are
// flattened:
//
//	labels, environment   k=v;k=v
//	dns, ssh_keys, ntp,
//	packages, services    a;b   (so an ssh key's comment cannot hold ';')
//	network.*             interface, dhcp, address, gateway, dns, vlan
//	network.wifi.*        wifi_ssid, wifi_password, wifi_interface
//
// An empty cell is an unset field. Errors use the same field paths as YAML
// (devices[0] is the first row after the header).
var CSVColumns = []string{
	"id", "hostname", "role", "model", "serial", "site", "labels",
	"interface", "dhcp", "address", "gateway", "dns", "vlan",
	"wifi_ssid", "wifi_password", "wifi_interface",
	"user", "ssh_keys", "timezone", "locale", "ntp", "packages", "services", "environment",
}

var csvRequired = []string{"id", "hostname", "role", "model", "site", "interface"}

// csvPath maps a column to its field path in a profile.
func csvPath(col string) string {
	switch col {
	case "interface", "dhcp", "address", "gateway", "dns", "vlan":
		return "network." + col
	case "wifi_ssid", "wifi_password", "wifi_interface":
		return "network.wifi." + strings.TrimPrefix(col, "wifi_")
	}
	return col
}

// ParseCSV parses and validates a CSV fleet file.
func ParseCSV(r io.Reader) (*Fleet, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &ValidationError{Errs: []FieldError{{Path: "(header)", Msg: "empty file: want a header row naming columns"}}}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidProfile, err)
	}
	var l errList
	col := map[string]int{}
	known := map[string]bool{}
	for _, c := range CSVColumns {
		known[c] = true
	}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		switch {
		case !known[h]:
			l.add("(header)", h, "unknown column; known: %s", strings.Join(CSVColumns, ", "))
		case col[h] != 0:
			l.add("(header)", h, "duplicate column")
		default:
			col[h] = i + 1 // 0 means absent
		}
	}
	for _, c := range csvRequired {
		if col[c] == 0 {
			l.add("(header)", c, "required column missing")
		}
	}
	if err := l.err(); err != nil {
		return nil, err
	}

	fl := &Fleet{}
	for row := 0; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: devices[%d]: %v", ErrInvalidProfile, row, err)
		}
		get := func(c string) string {
			if i := col[c]; i != 0 {
				return strings.TrimSpace(rec[i-1])
			}
			return ""
		}
		prefix := fmt.Sprintf("devices[%d]", row)
		p := Profile{
			ID:       get("id"),
			Hostname: get("hostname"),
			Role:     Role(get("role")),
			Model:    Model(get("model")),
			Serial:   get("serial"),
			Site:     get("site"),
			User:     get("user"),
			Timezone: get("timezone"),
			Locale:   get("locale"),
			SSHKeys:  splitList(get("ssh_keys")),
			NTP:      splitList(get("ntp")),
			Packages: splitList(get("packages")),
			Services: splitList(get("services")),
			Network: Network{
				Interface: get("interface"),
				Address:   get("address"),
				Gateway:   get("gateway"),
				DNS:       splitList(get("dns")),
			},
		}
		p.Labels = splitMap(&l, join(prefix, "labels"), get("labels"))
		p.Environment = splitMap(&l, join(prefix, "environment"), get("environment"))
		if s := get("dhcp"); s != "" {
			b, err := strconv.ParseBool(s)
			if err != nil || (s != "true" && s != "false") {
				l.add(join(prefix, csvPath("dhcp")), s, "want true or false")
			} else {
				p.Network.DHCP = &b
			}
		}
		if s := get("vlan"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil {
				l.add(join(prefix, csvPath("vlan")), s, "want a whole number")
			} else {
				p.Network.VLAN = &v
			}
		}
		if ssid, pw, ifc := get("wifi_ssid"), get("wifi_password"), get("wifi_interface"); ssid != "" || pw != "" || ifc != "" {
			p.Network.WiFi = &WiFi{SSID: ssid, Password: pw, Interface: ifc}
		}
		fl.Devices = append(fl.Devices, p)
	}
	if len(fl.Devices) == 0 {
		l.add("devices", "", "no device rows after the header")
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	if err := ValidateFleet(fl.Devices); err != nil {
		return nil, err
	}
	return fl, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, part := range strings.Split(s, ";") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func splitMap(l *errList, path, s string) map[string]string {
	items := splitList(s)
	if len(items) == 0 {
		return nil
	}
	m := make(map[string]string, len(items))
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		k = strings.TrimSpace(k)
		switch {
		case !ok || k == "":
			l.add(path, it, "want key=value")
		case hasKey(m, k):
			l.add(path, k, "duplicate key")
		default:
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }
