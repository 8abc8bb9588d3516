package provision

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkImage4GB runs BuildImage on a 4 GiB sparse image (64 MiB FAT32
// boot partition, the rest an ext4 writable partition) and reports
// throughput and the process's peak resident memory, which must stay far
// below the image size: the copy streams.
func BenchmarkImage4GB(b *testing.B) {
	if testing.Short() {
		b.Skip("4 GiB image: skipped under -short")
	}
	dir := b.TempDir()
	const total = 4 << 30
	img := makeTestImage(b, dir, total)
	p := loadExample(b)
	seed, err := GenerateSeed(p, testToken(b))
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, "fleetmesh-arm64")
	fakeELF(b, bin, uint16(elf.EM_AARCH64), 12<<20)
	out := filepath.Join(dir, "out.img")

	resetPeakRSS(b)
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := BuildImage(context.Background(), ImageOptions{In: img.Path, Out: out, Seed: seed, Binary: bin, GOARCH: "arm64"}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(peakRSSKiB(b))/1024, "peak-RSS-MiB")
}

// resetPeakRSS resets VmHWM (Linux ≥ 4.0), so the peak is the benchmark's.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset peak RSS (%v): it includes setup", err)
	}
}

func peakRSSKiB(b *testing.B) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
