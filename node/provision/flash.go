package provision

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Flasher writes an image to a card (or a regular file) and verifies it.
type Flasher struct {
	// Root is where /proc and /sys are looked up; "/" when empty. Tests
	// point it at a fake tree.
	Root string
	// Force skips the "removable" check. A mounted device is refused even
	// with Force: writing under a mounted filesystem corrupts it either way.
	Force bool
	// Progress, when set, receives every byte written (a progress bar).
	Progress io.Writer

	// Test hooks.
	wrapWriter func(io.Writer) io.Writer // wraps the device writer
	afterSync  func(path string) error   // between sync and read-back
}

// FlashResult reports a verified write.
type FlashResult struct {
	Bytes  int64
	SHA256 string
}

// Flash writes image (.img or .img.xz) to device, syncs, drops the device's
// cached pages, reads the written range back and compares SHA-256 digests.
// device must be a whole removable block device that is not mounted (see
// CheckTarget) or an existing regular file.
func (fl *Flasher) Flash(ctx context.Context, image, device string) (*FlashResult, error) {
	regular, err := fl.CheckTarget(device)
	if err != nil {
		return nil, err
	}
	src, err := OpenImage(image)
	if err != nil {
		return nil, err
	}
	defer src.Close()

	flags := os.O_WRONLY
	if regular {
		flags |= os.O_TRUNC
	} else {
		flags |= os.O_EXCL // the kernel refuses if a partition is in use
	}
	dst, err := os.OpenFile(device, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", device, err)
	}
	defer dst.Close()

	h := sha256.New()
	var w io.Writer = dst
	if fl.wrapWriter != nil {
		w = fl.wrapWriter(w)
	}
	bw := bufio.NewWriterSize(w, 4<<20)
	sinks := []io.Writer{bw, h}
	if fl.Progress != nil {
		sinks = append(sinks, fl.Progress)
	}
	n, err := io.Copy(io.MultiWriter(sinks...), ctxReader{ctx, src})
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", device, err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("write %s: %w", device, err)
	}
	if err := dst.Sync(); err != nil {
		return nil, fmt.Errorf("sync %s: %w", device, err)
	}
	// Read back from the device, not from the page cache.
	_ = unix.Fadvise(int(dst.Fd()), 0, 0, unix.FADV_DONTNEED)
	if err := dst.Close(); err != nil {
		return nil, err
	}
	if fl.afterSync != nil {
		if err := fl.afterSync(device); err != nil {
			return nil, err
		}
	}
	want := hex.EncodeToString(h.Sum(nil))
	got, err := hashPrefix(ctx, device, n)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", device, err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: %s has sha256 %s over the first %d bytes, the image %s; the card may be failing or fake",
			ErrVerifyFailed, device, got, n, want)
	}
	return &FlashResult{Bytes: n, SHA256: want}, nil
}

func hashPrefix(ctx context.Context, path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, n, unix.FADV_DONTNEED)
	h := sha256.New()
	m, err := io.CopyBuffer(h, ctxReader{ctx, io.LimitReader(f, n)}, make([]byte, 4<<20))
	if err != nil {
		return "", err
	}
	if m != n {
		return "", fmt.Errorf("only %d of %d bytes readable", m, n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// CheckTarget decides whether device may be written. A regular file is
// allowed (regular is true). A block device must be a whole disk, marked
// removable in sysfs unless Force, with neither it nor any of its partitions
// in /proc/self/mounts.
func (fl *Flasher) CheckTarget(device string) (regular bool, err error) {
	st, err := os.Stat(device)
	if err != nil {
		return false, err
	}
	if st.Mode().IsRegular() {
		return true, nil
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return false, fmt.Errorf("%w: %s is neither a block device nor a regular file", ErrUnsafeTarget, device)
	}
	real, err := filepath.EvalSymlinks(device)
	if err != nil {
		return false, err
	}
	return false, fl.checkBlockDevice(filepath.Base(real))
}

// checkBlockDevice checks the disk called name (sdb, mmcblk0) against sysfs
// and the mount table under Root.
func (fl *Flasher) checkBlockDevice(name string) error {
	root := fl.Root
	if root == "" {
		root = "/"
	}
	sysDir := filepath.Join(root, "sys", "block", name)
	if _, err := os.Stat(sysDir); err != nil {
		return fmt.Errorf("%w: %s is not a whole disk (no %s); give the disk, not a partition", ErrUnsafeTarget, name, sysDir)
	}
	// The disk and its partitions: subdirectories holding a "partition" file.
	names := map[string]bool{name: true}
	entries, _ := os.ReadDir(sysDir)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sysDir, e.Name(), "partition")); err == nil {
			names[e.Name()] = true
		}
	}
	mounts, err := os.ReadFile(filepath.Join(root, "proc", "self", "mounts"))
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "/dev/") {
			continue
		}
		if dev := filepath.Base(fields[0]); names[dev] {
			return fmt.Errorf("%w: /dev/%s is mounted on %s; unmount every partition of /dev/%s first",
				ErrUnsafeTarget, dev, unescapeMount(fields[1]), name)
		}
	}
	if fl.Force {
		return nil
	}
	if !removable(sysDir, name) {
		return fmt.Errorf("%w: /dev/%s is not a removable disk (it may be a system disk); use --force if you are sure", ErrUnsafeTarget, name)
	}
	return nil
}

// removable reports whether the disk is one a card goes into: marked
// removable, attached over USB (card readers often say removable=0), or an
// SD/MMC slot (mmcblk*, whose driver reports 0 too). The host's own SD card
// on a Pi is mounted, and the mount check has refused it already.
func removable(sysDir, name string) bool {
	if b, err := os.ReadFile(filepath.Join(sysDir, "removable")); err == nil && strings.TrimSpace(string(b)) == "1" {
		return true
	}
	if strings.HasPrefix(name, "mmcblk") {
		return true
	}
	if real, err := filepath.EvalSymlinks(sysDir); err == nil && strings.Contains(real, "/usb") {
		return true
	}
	return false
}

// unescapeMount undoes the octal escapes of /proc/self/mounts (\040 = space).
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}
