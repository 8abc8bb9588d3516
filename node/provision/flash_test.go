package provision

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeRandom(t *testing.T, path string, n int) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestFlashToFileWritesAndVerifies(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	data := writeRandom(t, img, 5*mib+123)
	target := filepath.Join(dir, "card")
	os.WriteFile(target, []byte("old contents that must go"), 0o600)
	progress := &countingWriter{}
	fl := &Flasher{Progress: progress}
	res, err := fl.Flash(context.Background(), img, target)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	if string(got) != string(data) || res.Bytes != int64(len(data)) || progress.n != res.Bytes {
		t.Fatalf("flashed %d bytes, progress %d, file equal %v", res.Bytes, progress.n, string(got) == string(data))
	}
}

// corruptingWriter flips one bit at offset at as the bytes go by.
type corruptingWriter struct {
	w   io.Writer
	at  int64
	off int64
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if c.at >= c.off && c.at < c.off+int64(len(p)) {
		q := append([]byte(nil), p...)
		q[c.at-c.off] ^= 0x01
		p = q
	}
	c.off += int64(len(p))
	return c.w.Write(p)
}

func TestFlashDetectsCorruptWrite(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	writeRandom(t, img, 3*mib)
	target := filepath.Join(dir, "card")
	os.WriteFile(target, nil, 0o600)

	fl := &Flasher{wrapWriter: func(w io.Writer) io.Writer { return &corruptingWriter{w: w, at: 2*mib + 7} }}
	if _, err := fl.Flash(context.Background(), img, target); !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("corrupting writer: err = %v, want ErrVerifyFailed", err)
	}

	// The card changes between sync and read-back.
	fl = &Flasher{afterSync: func(path string) error {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		b := make([]byte, 1)
		f.ReadAt(b, 1000)
		b[0] ^= 0x80
		_, err = f.WriteAt(b, 1000)
		return err
	}}
	if _, err := fl.Flash(context.Background(), img, target); !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("flipped byte: err = %v, want ErrVerifyFailed", err)
	}
}

func TestFlashXZImage(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	data := writeRandom(t, img, 1*mib)
	run(t, "xz", "-0", img)
	target := filepath.Join(dir, "card")
	os.WriteFile(target, nil, 0o600)
	if _, err := (&Flasher{}).Flash(context.Background(), img+".xz", target); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != string(data) {
		t.Fatal("xz image not flashed decompressed")
	}
}

// fakeRoot builds /proc/self/mounts and /sys/block/<disk> under a temp dir.
func fakeRoot(t *testing.T, mounts string, disks map[string]string, parts map[string][]string) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "proc", "self"), 0o755)
	os.WriteFile(filepath.Join(root, "proc", "self", "mounts"), []byte(mounts), 0o644)
	for d, removable := range disks {
		dir := filepath.Join(root, "sys", "block", d)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "removable"), []byte(removable+"\n"), 0o644)
		for _, p := range parts[d] {
			os.MkdirAll(filepath.Join(dir, p), 0o755)
			os.WriteFile(filepath.Join(dir, p, "partition"), []byte("1\n"), 0o644)
		}
	}
	return root
}

func TestFlashTargetChecks(t *testing.T) {
	mounts := "/dev/sda2 / ext4 rw 0 0\n/dev/sdc1 /media/ops/system\\040boot vfat rw 0 0\nproc /proc proc rw 0 0\n"
	root := fakeRoot(t, mounts,
		map[string]string{"sda": "0", "sdb": "1", "sdc": "1", "sdd": "0", "mmcblk0": "0"},
		map[string][]string{"sda": {"sda1", "sda2"}, "sdb": {"sdb1"}, "sdc": {"sdc1", "sdc2"}, "mmcblk0": {"mmcblk0p1"}})
	for _, c := range []struct {
		disk  string
		force bool
		want  string // "" = allowed
	}{
		{"sdb", false, ""},
		{"mmcblk0", false, ""},
		{"sda", false, "/dev/sda2 is mounted on /"},
		{"sda", true, "/dev/sda2 is mounted on /"}, // --force never writes under a mount
		{"sdc", false, "/dev/sdc1 is mounted on /media/ops/system boot"},
		{"sdd", false, "not a removable disk"},
		{"sdd", true, ""},
		{"sdb1", false, "not a whole disk"},
	} {
		err := (&Flasher{Root: root, Force: c.force}).checkBlockDevice(c.disk)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s force=%v: refused: %v", c.disk, c.force, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrUnsafeTarget)):
			t.Errorf("%s force=%v: err = %v, want %q", c.disk, c.force, err, c.want)
		}
	}
	// Neither a block device nor a regular file.
	if _, err := (&Flasher{}).CheckTarget(t.TempDir()); !errors.Is(err, ErrUnsafeTarget) {
		t.Errorf("directory target: %v", err)
	}
}
