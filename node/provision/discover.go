package provision

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
)

// RaspberryPiOUIs are the MAC prefixes (IEEE MA-L) registered to the
// Raspberry Pi Foundation and Raspberry Pi (Trading) Ltd.
var RaspberryPiOUIs = map[string]string{
	"b8:27:eb": "Raspberry Pi Foundation",
	"dc:a6:32": "Raspberry Pi Trading",
	"e4:5f:01": "Raspberry Pi Trading",
	"28:cd:c1": "Raspberry Pi Trading",
	"d8:3a:dd": "Raspberry Pi Trading",
	"2c:cf:67": "Raspberry Pi Trading",
}

// Neighbor is one entry of the kernel's neighbour (ARP/NDP) table.
type Neighbor struct {
	IP     netip.Addr       `json:"ip"`
	MAC    net.HardwareAddr `json:"-"`
	Device string           `json:"device,omitempty"`
	State  string           `json:"state,omitempty"`
}

// FoundPi is a neighbour with a Raspberry Pi MAC.
type FoundPi struct {
	IP      string `json:"ip"`
	MAC     string `json:"mac"`
	Vendor  string `json:"vendor"`
	Device  string `json:"device,omitempty"`
	State   string `json:"state,omitempty"`
	InFleet bool   `json:"in_fleet"`
}

// ReadNeighbors reads a neighbour table: /proc/net/arp format, or the output
// of `ip neigh` (detected by the header line).
func ReadNeighbors(r io.Reader) ([]Neighbor, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(64)
	if bytes.HasPrefix(head, []byte("IP address")) {
		return parseProcARP(br)
	}
	return parseIPNeigh(br)
}

// ReadNeighborFile reads path, /proc/net/arp when empty.
func ReadNeighborFile(path string) ([]Neighbor, error) {
	if path == "" {
		path = "/proc/net/arp"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadNeighbors(f)
}

// parseProcARP parses /proc/net/arp:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	10.20.0.11       0x1         0x2         dc:a6:32:01:02:03     *        eth0
func parseProcARP(r io.Reader) ([]Neighbor, error) {
	sc := bufio.NewScanner(r)
	var out []Neighbor
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		ip, err1 := netip.ParseAddr(f[0])
		mac, err2 := net.ParseMAC(f[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("arp table line %d: %q", line, sc.Text())
		}
		state := "REACHABLE"
		if f[2] == "0x0" { // ATF_COM unset: incomplete
			state = "INCOMPLETE"
		}
		out = append(out, Neighbor{IP: ip, MAC: mac, Device: f[5], State: state})
	}
	return out, sc.Err()
}

// parseIPNeigh parses `ip neigh` output:
//
//	10.20.0.11 dev eth0 lladdr dc:a6:32:01:02:03 REACHABLE
//	fe80::1 dev eth0 lladdr dc:a6:32:01:02:03 router STALE
//	10.20.0.99 dev eth0 FAILED
func parseIPNeigh(r io.Reader) ([]Neighbor, error) {
	sc := bufio.NewScanner(r)
	var out []Neighbor
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			return nil, fmt.Errorf("neighbour table line %d: %q: not an address", line, sc.Text())
		}
		n := Neighbor{IP: ip}
		for i := 1; i < len(f); i++ {
			switch f[i] {
			case "dev":
				if i+1 < len(f) {
					n.Device = f[i+1]
					i++
				}
			case "lladdr":
				if i+1 < len(f) {
					mac, err := net.ParseMAC(f[i+1])
					if err != nil {
						return nil, fmt.Errorf("neighbour table line %d: bad MAC %q", line, f[i+1])
					}
					n.MAC = mac
					i++
				}
			default:
				if s := f[i]; s == strings.ToUpper(s) && s != "" && s[0] >= 'A' && s[0] <= 'Z' {
					n.State = s
				}
			}
		}
		out = append(out, n)
	}
	return out, sc.Err()
}

// Known says which devices are already in the fleet, by MAC or IP.
type Known struct {
	macs map[string]bool
	ips  map[netip.Addr]bool
}

// NewKnown builds a Known from MAC addresses and IP addresses, in any order
// and any common MAC notation; it reports entries that are neither.
func NewKnown(entries []string) (*Known, error) {
	k := &Known{macs: map[string]bool{}, ips: map[netip.Addr]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" || strings.HasPrefix(e, "#") {
			continue
		}
		if ip, err := netip.ParseAddr(e); err == nil {
			k.ips[ip.Unmap()] = true
			continue
		}
		if mac, err := net.ParseMAC(e); err == nil {
			k.macs[mac.String()] = true
			continue
		}
		return nil, fmt.Errorf("known devices: %q is neither an IP nor a MAC address", e)
	}
	return k, nil
}

func (k *Known) has(n Neighbor) bool {
	if k == nil {
		return false
	}
	return k.macs[n.MAC.String()] || k.ips[n.IP.Unmap()]
}

// FindPis returns the neighbours whose MAC has a Raspberry Pi OUI and which
// are not failed or incomplete, one per (IP, MAC), sorted by IP, marking
// those in known (which may be nil).
func FindPis(neigh []Neighbor, known *Known) []FoundPi {
	seen := map[string]bool{}
	var out []FoundPi
	for _, n := range neigh {
		if len(n.MAC) != 6 || n.State == "FAILED" || n.State == "INCOMPLETE" {
			continue
		}
		vendor, ok := RaspberryPiOUIs[n.MAC.String()[:8]]
		if !ok {
			continue
		}
		key := n.IP.String() + "/" + n.MAC.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, FoundPi{
			IP: n.IP.String(), MAC: n.MAC.String(), Vendor: vendor,
			Device: n.Device, State: n.State, InFleet: known.has(n),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := netip.MustParseAddr(out[i].IP), netip.MustParseAddr(out[j].IP)
		if a != b {
			return a.Less(b)
		}
		return out[i].MAC < out[j].MAC
	})
	return out
}
