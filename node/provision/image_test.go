package provision

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func loadExample(t testing.TB) *Profile {
	t.Helper()
	fl, err := LoadFile("testdata/sensor-001.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &fl.Devices[0]
}

// mtoolsRead reads a file from the FAT filesystem at offset in img with
// mtools, an implementation independent of go-diskfs.
func mtoolsRead(t *testing.T, img string, offset int64, name string) []byte {
	t.Helper()
	out, err := exec.Command("mtype", "-i", img+"@@"+itoa(offset), "::"+name).Output()
	if err != nil {
		t.Fatalf("mtype %s: %v", name, err)
	}
	return out
}

func TestImageWritesSeedAndBinaryOnly(t *testing.T) {
	needTool(t, "mdir", "mtype", "fsck.vfat", "xz")
	dir := t.TempDir()
	img := makeTestImage(t, dir, 96*mib)
	p := loadExample(t)
	seed, err := GenerateSeed(p, testToken(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "fleetmesh-arm64")
	binData := fakeELF(t, bin, uint16(elf.EM_AARCH64), 3*mib+12345)

	run(t, "xz", "-k", "-T1", "-0", img.Path)
	for _, c := range []struct {
		name, in string
		systemXZ bool
	}{
		{"img", img.Path, true},
		{"xz-go", img.Path + ".xz", false},
		{"xz-system", img.Path + ".xz", true},
	} {
		in := c.in
		t.Run(c.name, func(t *testing.T) {
			useSystemXZ = c.systemXZ
			defer func() { useSystemXZ = true }()
			out := filepath.Join(dir, "out-"+c.name+".img")
			res, err := BuildImage(context.Background(), ImageOptions{
				In: in, Out: out, Seed: seed, Binary: bin, GOARCH: p.GOARCH(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Partition != 1 || !strings.EqualFold(res.Label, BootLabel) || res.Size != 96*mib {
				t.Fatalf("result %+v", res)
			}
			if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
				t.Errorf("image mode %v, want 0600: it holds the join token", st.Mode().Perm())
			}
			listing := string(run(t, "mdir", "-i", out+"@@"+itoa(img.BootStart), "::"))
			for _, name := range []string{"user-data", "meta-data", "network-config", "fleetmesh", "config"} {
				if !strings.Contains(listing, name) {
					t.Errorf("mdir does not list %s:\n%s", name, listing)
				}
			}
			for name, want := range seed.Files() {
				if got := mtoolsRead(t, out, img.BootStart, name); !bytes.Equal(got, want) {
					t.Errorf("%s differs in the image", name)
				}
			}
			if got := mtoolsRead(t, out, img.BootStart, BootBinaryName); !bytes.Equal(got, binData) {
				t.Errorf("binary differs in the image (%d bytes, want %d)", len(got), len(binData))
			}
			if got := mtoolsRead(t, out, img.BootStart, "config.txt"); string(got) != "arm_64bit=1\n" {
				t.Errorf("existing boot file changed: %q", got)
			}
			// fsck.vfat extracts the partition itself, read-only.
			part := filepath.Join(t.TempDir(), "boot.part")
			pf, _ := os.Create(part)
			src, _ := os.Open(out)
			if _, err := pf.ReadFrom(ioSection(src, img.BootStart, img.BootSize)); err != nil {
				t.Fatal(err)
			}
			pf.Close()
			src.Close()
			if out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput(); err != nil {
				t.Errorf("fsck.vfat -n: %v\n%s", err, out)
			}
			if hashRange(t, out, img.DataStart, img.DataSize) != img.DataSHA256 {
				t.Error("the writable partition changed")
			}
			if hashRange(t, out, 0, img.BootStart) != img.BeforeBoot {
				t.Error("the MBR or the gap before the boot partition changed")
			}
			if hashRange(t, out, img.DataStart+img.DataSize, 1*mib) != img.AfterEnd {
				t.Error("the bytes after the last partition changed")
			}
		})
	}
}

func TestImageRefusesWrongArchAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fleetmesh-amd64")
	fakeELF(t, bin, uint16(elf.EM_X86_64), 1024)
	in := filepath.Join(dir, "in.img")
	os.WriteFile(in, make([]byte, 4096), 0o644)
	p := loadExample(t)
	seed, _ := GenerateSeed(p, testToken(t))
	_, err := BuildImage(context.Background(), ImageOptions{In: in, Out: filepath.Join(dir, "out.img"), Seed: seed, Binary: bin, GOARCH: "arm64"})
	if !errors.Is(err, ErrWrongArch) {
		t.Fatalf("err = %v, want ErrWrongArch", err)
	}
	// No FAT partition: refused, and no output or temporary left.
	fakeELF(t, bin, uint16(elf.EM_AARCH64), 1024)
	_, err = BuildImage(context.Background(), ImageOptions{In: in, Out: filepath.Join(dir, "out.img"), Seed: seed, Binary: bin, GOARCH: "arm64"})
	if !errors.Is(err, ErrNoBootPartition) {
		t.Fatalf("err = %v, want ErrNoBootPartition", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestOpenImageTruncatedXZIsAnError(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	raw := filepath.Join(dir, "a.img")
	data := make([]byte, 2*mib)
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	os.WriteFile(raw, data, 0o644)
	run(t, "xz", "-0", raw)
	xzData, _ := os.ReadFile(raw + ".xz")
	cut := filepath.Join(dir, "cut.img.xz")
	os.WriteFile(cut, xzData[:len(xzData)/2], 0o644)
	for _, system := range []bool{true, false} {
		useSystemXZ = system
		r, err := OpenImage(cut)
		if err == nil {
			_, err = io.Copy(io.Discard, r)
			r.Close()
		}
		if err == nil {
			t.Errorf("system xz %v: truncated stream read without error", system)
		}
	}
	useSystemXZ = true
}

func TestImageFallsBackToFirstFATPartition(t *testing.T) {
	needTool(t, "mlabel", "mtype")
	dir := t.TempDir()
	img := makeTestImage(t, dir, 96*mib)
	run(t, "mlabel", "-i", img.Path+"@@"+itoa(img.BootStart), "::RPI-BOOT")
	p := loadExample(t)
	seed, _ := GenerateSeed(p, testToken(t))
	bin := filepath.Join(dir, "fleetmesh")
	fakeELF(t, bin, uint16(elf.EM_AARCH64), 1000)
	out := filepath.Join(dir, "out.img")
	res, err := BuildImage(context.Background(), ImageOptions{In: img.Path, Out: out, Seed: seed, Binary: bin, GOARCH: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Partition != 1 || res.Label != "RPI-BOOT" {
		t.Fatalf("%+v", res)
	}
	if got := mtoolsRead(t, out, img.BootStart, UserDataFile); !bytes.Equal(got, seed.UserData) {
		t.Fatal("user-data not written to the fallback partition")
	}
}
