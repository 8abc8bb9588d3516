package provision

import (
	"strings"
	"testing"
)

const procARP = `IP address       HW type     Flags       HW address            Mask     Device
10.20.0.11       0x1         0x2         dc:a6:32:01:02:03     *        eth0
10.20.0.12       0x1         0x2         B8:27:EB:aa:bb:cc     *        eth0
10.20.0.13       0x1         0x2         00:1b:21:aa:bb:cc     *        eth0
10.20.0.14       0x1         0x0         00:00:00:00:00:00     *        eth0
10.20.0.15       0x1         0x2         2c:cf:67:00:00:01     *        eth0.200
10.20.0.9        0x1         0x2         d8:3a:dd:10:20:30     *        eth0
10.20.0.16       0x1         0x0         e4:5f:01:00:00:09     *        eth0
10.20.0.17       0x1         0x2         dc:a6:33:01:02:03     *        eth0
`

const ipNeigh = `10.20.0.11 dev eth0 lladdr dc:a6:32:01:02:03 REACHABLE
10.20.0.21 dev eth0 lladdr 28:cd:c1:0a:0b:0c STALE
10.20.0.22 dev eth0 lladdr e4:5f:01:00:00:01 DELAY
10.20.0.99 dev eth0 FAILED
10.20.0.98 dev eth0 lladdr e4:5f:01:00:00:02 FAILED
10.20.0.1 dev eth0 lladdr 3c:ec:ef:00:00:01 router REACHABLE
fe80::dea6:32ff:fe01:203 dev eth0 lladdr dc:a6:32:01:02:03 STALE
`

func TestDiscoverProcARP(t *testing.T) {
	neigh, err := ReadNeighbors(strings.NewReader(procARP))
	if err != nil {
		t.Fatal(err)
	}
	known, err := NewKnown([]string{"DC-A6-32-01-02-03", "10.20.0.15", "# comment", ""})
	if err != nil {
		t.Fatal(err)
	}
	got := FindPis(neigh, known)
	var lines []string
	for _, p := range got {
		lines = append(lines, p.IP+" "+p.MAC+" "+p.Device+" "+map[bool]string{true: "known", false: "new"}[p.InFleet])
	}
	want := []string{
		"10.20.0.9 d8:3a:dd:10:20:30 eth0 new",
		"10.20.0.11 dc:a6:32:01:02:03 eth0 known",
		"10.20.0.12 b8:27:eb:aa:bb:cc eth0 new",
		"10.20.0.15 2c:cf:67:00:00:01 eth0.200 known",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestDiscoverIPNeigh(t *testing.T) {
	neigh, err := ReadNeighbors(strings.NewReader(ipNeigh))
	if err != nil {
		t.Fatal(err)
	}
	got := FindPis(neigh, nil)
	var ips []string
	for _, p := range got {
		ips = append(ips, p.IP+"/"+p.State)
	}
	want := "10.20.0.11/REACHABLE,10.20.0.21/STALE,10.20.0.22/DELAY,fe80::dea6:32ff:fe01:203/STALE"
	if strings.Join(ips, ",") != want {
		t.Fatalf("got %s\nwant %s", strings.Join(ips, ","), want)
	}
}

func TestDiscoverRejectsGarbage(t *testing.T) {
	if _, err := ReadNeighbors(strings.NewReader("not an address dev eth0\n")); err == nil {
		t.Error("garbage neighbour table accepted")
	}
	if _, err := NewKnown([]string{"pi-17"}); err == nil {
		t.Error("known entry that is neither IP nor MAC accepted")
	}
}
