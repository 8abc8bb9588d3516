package node

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"
)

// hostSample is one reading of the host's vitals.
type hostSample struct {
	CPU, Mem, Disk, Load1 float64
	TempC                 *float64
	Uptime                uint64
	// DiskFree and DiskTotal are bytes of the data dir's filesystem
	// (free: what an unprivileged writer may still use); InodesFree and
	// InodesTotal its inodes (0 total: the filesystem does not count them).
	DiskFree, DiskTotal     uint64
	InodesFree, InodesTotal uint64
}

// diskFullFree is the free space under which a node reports its data dir's
// disk full: bbolt grows raft.db by whole pages and more, and the spec copy
// is rewritten whole, so a few megabytes is already too late to be safe.
const diskFullFree = 4 << 20

// diskFullInodes is the count of free inodes under which the disk is full
// too: every atomic write of the data dir makes a new file and renames it.
const diskFullInodes = 64

// diskFull says whether the data dir's disk is full, of space or of inodes
// (a reading that failed is not).
func (s hostSample) diskFull() bool {
	return s.DiskTotal > 0 && s.DiskFree < diskFullFree || s.InodesTotal > 0 && s.InodesFree < diskFullInodes
}

// bytesIEC formats a byte count for a message: "3.2 MiB".
func bytesIEC(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// hostSampler reads host metrics with gopsutil. One sampler is shared by all
// nodes in a process (test fleets run many), and readings are cached for a
// second: the host is the same for all of them, and only the disk differs
// by data dir.
type hostSampler struct {
	mu   sync.Mutex
	at   time.Time
	last hostSample
	disk map[string]diskSample
}

type diskSample struct {
	at                      time.Time
	percent                 float64
	free, total             uint64
	inodesFree, inodesTotal uint64
}

var sharedSampler = &hostSampler{}

func (s *hostSampler) sample(diskPath string) hostSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if now.Sub(s.at) >= time.Second {
		var h hostSample
		if p, err := cpu.Percent(0, false); err == nil && len(p) > 0 {
			h.CPU = round1(p[0])
		}
		if v, err := mem.VirtualMemory(); err == nil {
			h.Mem = round1(v.UsedPercent)
		}
		if l, err := load.Avg(); err == nil {
			h.Load1 = l.Load1
		}
		if u, err := host.Uptime(); err == nil {
			h.Uptime = u
		}
		h.TempC = boardTemp()
		s.at, s.last = now, h
	}
	h := s.last
	d, ok := s.disk[diskPath]
	if !ok || now.Sub(d.at) >= time.Second {
		d = diskSample{at: now}
		if u, err := disk.Usage(diskPath); err == nil {
			d.percent, d.free, d.total = round1(u.UsedPercent), u.Free, u.Total
			d.inodesFree, d.inodesTotal = u.InodesFree, u.InodesTotal
		}
		if s.disk == nil || len(s.disk) > 4096 {
			s.disk = map[string]diskSample{}
		}
		s.disk[diskPath] = d
	}
	h.Disk, h.DiskFree, h.DiskTotal = d.percent, d.free, d.total
	h.InodesFree, h.InodesTotal = d.inodesFree, d.inodesTotal
	return h
}

// boardTemp reads the SoC temperature where the board has a sensor (a Pi's
// thermal_zone0 is the CPU); nil where there is none.
func boardTemp() *float64 {
	b, err := os.ReadFile("/sys/class/thermal/thermal_zone0/temp")
	if err != nil {
		return nil
	}
	milli, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return nil
	}
	t := round1(milli / 1000)
	return &t
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
