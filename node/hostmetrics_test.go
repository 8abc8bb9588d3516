package node

import "testing"

func TestDiskFull(t *testing.T) {
	for _, c := range []struct {
		s    hostSample
		full bool
	}{
		{hostSample{}, false}, // no reading
		{hostSample{DiskFree: 1 << 30, DiskTotal: 2 << 30, InodesFree: 1000, InodesTotal: 5000}, false},
		{hostSample{DiskFree: 1 << 20, DiskTotal: 2 << 30, InodesFree: 1000, InodesTotal: 5000}, true},
		{hostSample{DiskFree: 1 << 30, DiskTotal: 2 << 30, InodesFree: 3, InodesTotal: 5000}, true},
		{hostSample{DiskFree: 1 << 30, DiskTotal: 2 << 30}, false}, // a filesystem without inode counts
	} {
		if got := c.s.diskFull(); got != c.full {
			t.Errorf("%+v: full %v, want %v", c.s, got, c.full)
		}
	}
	if got := bytesIEC(3 << 20); got != "3.0 MiB" {
		t.Errorf("bytesIEC(3 MiB) = %q", got)
	}
}
