package provision

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

const testPin = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"

func testToken(t testing.TB) jointoken.Token {
	t.Helper()
	tok, err := jointoken.New(testPin, []string{"10.20.0.1:7400", "gw2.plant-a.local:7400"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func needTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (make deps installs it): %v", n, err)
		}
	}
}

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// fakeELF writes an ELF64 header for machine followed by size random bytes:
// enough for debug/elf and for a byte-equality check after copying.
func fakeELF(t testing.TB, path string, machine uint16, size int) []byte {
	t.Helper()
	h := make([]byte, 64)
	copy(h, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	binary.LittleEndian.PutUint16(h[16:], 2) // ET_EXEC
	binary.LittleEndian.PutUint16(h[18:], machine)
	binary.LittleEndian.PutUint32(h[20:], 1)  // version
	binary.LittleEndian.PutUint16(h[52:], 64) // ehsize
	body := make([]byte, size)
	rand.Read(body)
	data := append(h, body...)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return data
}

// testImage is an image laid out like Ubuntu's Raspberry Pi one: MBR, a
// FAT32 partition labeled system-boot, and an ext4 partition labeled
// writable.
type testImage struct {
	Path                 string
	BootStart, BootSize  int64
	DataStart, DataSize  int64
	DataSHA256           [32]byte
	BeforeBoot, AfterEnd [32]byte // hashes of the bytes outside both partitions
}

const mib = 1 << 20

// makeTestImage builds it in dir. total is the image size; the boot
// partition is 64 MiB (FAT32 needs 65525 clusters) and the data partition
// fills the rest up to total-1 MiB, which stays empty.
func makeTestImage(t testing.TB, dir string, total int64) *testImage {
	t.Helper()
	needTool(t, "mkfs.vfat", "mcopy", "mkfs.ext4")
	img := &testImage{
		Path:      filepath.Join(dir, "ubuntu.img"),
		BootStart: 1 * mib, BootSize: 64 * mib,
		DataStart: 65 * mib,
	}
	img.DataSize = total - img.DataStart - 1*mib
	d, err := diskfs.Create(img.Path, total, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Partition(&mbr.Table{
		LogicalSectorSize:  512,
		PhysicalSectorSize: 512,
		Partitions: []*mbr.Partition{
			{Bootable: true, Type: mbr.Fat32LBA, Start: uint32(img.BootStart / 512), Size: uint32(img.BootSize / 512)},
			{Type: mbr.Linux, Start: uint32(img.DataStart / 512), Size: uint32(img.DataSize / 512)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()

	fat := filepath.Join(dir, "boot.part")
	run(t, "mkfs.vfat", "-C", "-F", "32", "-n", "system-boot", fat, itoa(img.BootSize/1024))
	// Ubuntu ships a user-data of its own: provisioning must replace it.
	stock := filepath.Join(dir, "stock-user-data")
	os.WriteFile(stock, []byte("#cloud-config\n# stock\n"), 0o644)
	run(t, "mcopy", "-i", fat, stock, "::user-data")
	os.WriteFile(filepath.Join(dir, "config.txt"), []byte("arm_64bit=1\n"), 0o644)
	run(t, "mcopy", "-i", fat, filepath.Join(dir, "config.txt"), "::config.txt")

	root := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	noise := make([]byte, 2*mib)
	rand.Read(noise)
	os.WriteFile(filepath.Join(root, "etc", "noise.bin"), noise, 0o644)
	ext := filepath.Join(dir, "data.part")
	run(t, "mkfs.ext4", "-q", "-F", "-L", "writable", "-d", root, ext, itoa(img.DataSize/1024)+"k")

	f, err := os.OpenFile(img.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, part := range []struct {
		path  string
		start int64
	}{{fat, img.BootStart}, {ext, img.DataStart}} {
		src, err := os.Open(part.path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(f, part.start), src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		os.Remove(part.path)
	}
	if total > 1<<30 {
		return img // a benchmark image: hashing it would dominate
	}
	img.DataSHA256 = hashRange(t, img.Path, img.DataStart, img.DataSize)
	img.BeforeBoot = hashRange(t, img.Path, 0, img.BootStart)
	img.AfterEnd = hashRange(t, img.Path, img.DataStart+img.DataSize, total-img.DataStart-img.DataSize)
	return img
}

func hashRange(t testing.TB, path string, off, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func ioSection(f *os.File, off, n int64) io.Reader { return io.NewSectionReader(f, off, n) }
