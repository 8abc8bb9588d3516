package hardening

import (
	"context"
	"strings"
	"testing"
)

func TestEncryptedRootIsReportedNotApplied(t *testing.T) {
	yes := true
	p := &Policy{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "luks"}}
	p.Spec.Data.RequireEncryptedRoot = &yes
	for _, tc := range []struct {
		name   string
		files  []seedFile
		status Status
		want   string
	}{
		{"plain partition", []seedFile{{path: "/proc/mounts", data: "/dev/mmcblk0p2 / ext4 rw 0 0\n", mode: 0o444}},
			StatusFail, "not a device-mapper device"},
		{"dm name with a LUKS uuid", []seedFile{
			{path: "/proc/mounts", data: "/dev/mapper/cryptroot / ext4 rw 0 0\n", mode: 0o444},
			{path: "/sys/block/dm-0/dm/name", data: "cryptroot\n", mode: 0o444},
			{path: "/sys/block/dm-0/dm/uuid", data: "CRYPT-LUKS2-0123-cryptroot\n", mode: 0o444},
		}, StatusPass, "a LUKS mapping"},
		{"crypttab from fstab", []seedFile{
			{path: "/etc/fstab", data: "/dev/mapper/root_crypt / ext4 defaults 0 1\n", mode: 0o644},
			{path: "/etc/crypttab", data: "root_crypt UUID=abc none luks\n", mode: 0o644},
		}, StatusPass, "listed in /etc/crypttab"},
		{"lvm, not in crypttab", []seedFile{
			{path: "/proc/mounts", data: "/dev/mapper/vg-root / ext4 rw 0 0\n", mode: 0o444},
			{path: "/etc/crypttab", data: "# none\n", mode: 0o644},
		}, StatusFail, "not in /etc/crypttab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeRoot(t, tc.files)
			before := snapshot(t, root)
			res, err := Apply(context.Background(), p, root, false, Options{})
			if err != nil {
				t.Fatal(err)
			}
			r := res.Report.Results[0]
			if r.Rule != "data:encrypted-root" || r.Status != tc.status || !strings.Contains(r.Evidence, tc.want) {
				t.Errorf("%+v; want %s with %q", r, tc.status, tc.want)
			}
			if len(res.Changes) != 0 || (tc.status == StatusFail) != (len(res.Unresolved) == 1) {
				t.Errorf("changes %v, unresolved %v", res.Changes, res.Unresolved)
			}
			if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
				t.Errorf("apply changed files for a report-only rule: %v", d)
			}
		})
	}
}
