package hardening

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"
)

// lock takes the root's hardening lock, without waiting. The lock is a
// flock on the root directory itself, so taking it writes nothing.
func (f *rootFS) lock() (unlock func(), err error) {
	fh, err := f.r.Open(".")
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fh.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, err
	}
	return func() { fh.Close() }, nil
}

// BackupDir is where, below the root, Apply keeps one directory per apply
// that changed something.
const BackupDir = "/var/lib/fleetmesh/hardening/backup"

// Change is one file change made (or, in a dry run, planned) by Apply.
type Change struct {
	Path   string `json:"path"`
	Action string `json:"action"` // write, create, chmod, symlink, remove
	Reason string `json:"reason"`
}

// ApplyResult says what Apply changed.
type ApplyResult struct {
	DryRun  bool     `json:"dryRun"`
	Changes []Change `json:"changes"`
	// Backup is the in-root directory holding the backup; empty when
	// nothing changed or in a dry run.
	Backup string `json:"backup,omitempty"`
	// Live lists what was (or would be) done to the running system.
	Live []string `json:"live,omitempty"`
	// Unresolved lists what apply cannot fix, such as missing packages.
	Unresolved []string `json:"unresolved,omitempty"`
	// Report is the check after the apply (before it, in a dry run).
	Report *Report `json:"report"`
}

// Apply makes the system below root match p. It is idempotent: when the
// system already matches, it changes nothing and Changes is empty. Before
// the first change it saves every file it will touch (and notes the files
// and directories that do not exist yet) under BackupDir, so Undo can put
// them back. Each file is replaced atomically. With dryRun it only reports
// what it would change. The running system (sysctl, systemd, nft, sshd,
// fail2ban, auditd) is updated only through Options.Live, by default only
// when root is "/".
func Apply(ctx context.Context, p *Policy, root string, dryRun bool, opts Options) (*ApplyResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	f, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !dryRun {
		unlock, err := f.lock()
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	live := opts.live(root)
	ev, err := evaluate(ctx, p, f, opts.fleetPorts(), live)
	if err != nil {
		return nil, err
	}
	res := &ApplyResult{DryRun: dryRun, Unresolved: ev.unresolved}
	for _, o := range ev.ops {
		res.Changes = append(res.Changes, Change{Path: o.path, Action: o.action(f), Reason: o.why})
	}
	steps := liveSteps(ev)
	if live != nil {
		for _, s := range steps {
			res.Live = append(res.Live, s.name)
		}
	}
	if dryRun {
		res.Report = newReport(p, root, ev.results)
		return res, nil
	}
	if len(ev.ops) > 0 {
		dir, err := backup(f, ev.ops, p.Metadata.Name, opts.now())
		if err != nil {
			return nil, fmt.Errorf("back up before applying (nothing was changed): %w", err)
		}
		res.Backup = dir
		for _, o := range ev.ops {
			if err := o.do(f); err != nil {
				return res, fmt.Errorf("apply %s (%s): %w; \"fleetmesh harden undo\" restores the state before this apply", o.path, o.why, err)
			}
		}
	}
	if live != nil {
		for _, s := range steps {
			if err := s.run(ctx, live); err != nil {
				return res, fmt.Errorf("files written, but the running system did not take them: %w", err)
			}
		}
	}
	after, err := evaluate(ctx, p, f, opts.fleetPorts(), live)
	if err != nil {
		return res, err
	}
	res.Report = newReport(p, root, after.results)
	return res, nil
}

type namedStep struct {
	name string
	run  func(context.Context, Live) error
}

func liveSteps(ev *evaluation) []namedStep {
	var out []namedStep
	if ev.live[liveSysctl] {
		out = append(out, namedStep{"sysctl --system", func(ctx context.Context, l Live) error { return l.ReloadSysctl(ctx) }})
	}
	if ev.live[liveServices] || len(ev.stopUnits) > 0 {
		units := ev.stopUnits
		out = append(out, namedStep{"systemctl stop " + strings.Join(units, " "), func(ctx context.Context, l Live) error {
			if len(units) == 0 {
				return l.ReloadSystemd(ctx)
			}
			return l.StopServices(ctx, units)
		}})
	}
	if ev.live[liveFirewall] {
		out = append(out, namedStep{"nft -f " + nftFile, func(ctx context.Context, l Live) error { return l.LoadFirewall(ctx, nftFile) }})
	}
	if ev.live[liveSSH] {
		out = append(out, namedStep{"reload sshd", func(ctx context.Context, l Live) error { return l.ReloadSSH(ctx) }})
	}
	if ev.live[liveFail2ban] {
		out = append(out, namedStep{"fail2ban-client reload", func(ctx context.Context, l Live) error { return l.ReloadFail2ban(ctx) }})
	}
	if ev.live[liveAudit] {
		out = append(out, namedStep{"augenrules --load", func(ctx context.Context, l Live) error { return l.LoadAuditRules(ctx) }})
	}
	return out
}

func (o op) action(f *rootFS) string {
	switch o.kind {
	case opWrite:
		if _, err := f.lstat(o.path); err != nil {
			return "create"
		}
		return "write"
	case opSymlink:
		return "symlink"
	case opRemove:
		return "remove"
	default:
		return "chmod"
	}
}

func (o op) do(f *rootFS) error {
	switch o.kind {
	case opWrite:
		if _, err := f.mkdirAll(path.Dir(o.path)); err != nil {
			return err
		}
		return f.writeAtomic(o.path, o.data, o.mode)
	case opSymlink:
		if _, err := f.mkdirAll(path.Dir(o.path)); err != nil {
			return err
		}
		return f.symlinkAtomic(o.target, o.path)
	case opRemove:
		err := f.r.Remove(rel(o.path))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		return err
	default:
		return f.r.Chmod(rel(o.path), o.mode)
	}
}

// manifest describes one backup.
type manifest struct {
	Version int           `json:"version"`
	Created time.Time     `json:"created"`
	Policy  string        `json:"policy"`
	Entries []backupEntry `json:"entries"`
	// CreatedDirs were made by the apply; undo removes them if empty.
	CreatedDirs []string `json:"createdDirs,omitempty"`
}

// backupEntry is the state of one path before the apply.
type backupEntry struct {
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Type    string `json:"type,omitempty"` // file or symlink
	Mode    uint32 `json:"mode,omitempty"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Target  string `json:"target,omitempty"` // symlink target
	Copy    string `json:"copy,omitempty"`   // file under the backup's files/; empty when only the mode changes
}

// backup saves the state of every path ops will touch and returns the
// in-root backup directory. Its manifest is written last, atomically, so a
// backup without a manifest is incomplete and never used.
func backup(f *rootFS, ops []op, policy string, now time.Time) (string, error) {
	base := now.UTC().Format("20060102T150405.000000000Z")
	dir := path.Join(BackupDir, base)
	for i := 2; f.exists(dir); i++ {
		dir = path.Join(BackupDir, fmt.Sprintf("%s-%d", base, i))
	}
	if _, err := f.mkdirAll(BackupDir); err != nil {
		return "", err
	}
	if err := f.r.Mkdir(rel(dir), 0o700); err != nil {
		return "", err
	}
	if err := f.r.Mkdir(rel(dir+"/files"), 0o700); err != nil {
		return "", err
	}
	m := manifest{Version: 1, Created: now.UTC(), Policy: policy}
	seen := map[string]int{}
	createdDirs := map[string]bool{}
	for _, o := range ops {
		if o.kind == opWrite || o.kind == opSymlink {
			for d := path.Dir(o.path); d != "/"; d = path.Dir(d) {
				if !f.exists(d) {
					createdDirs[d] = true
				}
			}
		}
		needCopy := o.kind != opChmod
		if i, ok := seen[o.path]; ok {
			if !needCopy || m.Entries[i].Copy != "" || m.Entries[i].Type != "file" {
				continue
			}
			m.Entries = m.Entries[:i] // upgrade a mode-only entry to a copy
			delete(seen, o.path)
		}
		ent := backupEntry{Path: o.path}
		fi, err := f.lstat(o.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", err
		default:
			ent.Existed = true
			ent.Mode = unixMode(fi.Mode())
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				ent.UID, ent.GID = int(st.Uid), int(st.Gid)
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				ent.Type = "symlink"
				if ent.Target, err = f.readlink(o.path); err != nil {
					return "", err
				}
			case fi.Mode().IsRegular():
				ent.Type = "file"
				if needCopy {
					data, err := f.r.ReadFile(rel(o.path))
					if err != nil {
						return "", err
					}
					ent.Copy = fmt.Sprintf("files/%d", len(m.Entries))
					if err := f.writeAtomic(path.Join(dir, ent.Copy), data, 0o600); err != nil {
						return "", err
					}
				}
			default:
				return "", fmt.Errorf("%s is not a regular file or symlink; refusing to change it", o.path)
			}
		}
		seen[o.path] = len(m.Entries)
		m.Entries = append(m.Entries, ent)
	}
	for d := range createdDirs {
		m.CreatedDirs = append(m.CreatedDirs, d)
	}
	sort.Strings(m.CreatedDirs)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	if err := f.writeAtomic(path.Join(dir, "manifest.json"), data, 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// UndoResult says what Undo restored.
type UndoResult struct {
	Backup   string   `json:"backup"`
	Restored []string `json:"restored"`
	Removed  []string `json:"removed"`
	Live     []string `json:"live,omitempty"`
}

// Undo restores the state saved by the most recent Apply that changed
// something: original bytes, modes, owners and symlinks, and removes the
// files and directories that apply created. The backup is then deleted, so
// a second Undo goes one apply further back. It returns ErrNothingToUndo
// when there is no backup.
func Undo(ctx context.Context, root string, opts Options) (*UndoResult, error) {
	f, err := openRoot(root)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unlock, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir, m, err := latestBackup(f)
	if err != nil {
		return nil, err
	}
	res := &UndoResult{Backup: dir}
	touched := map[string]bool{}
	for i := len(m.Entries) - 1; i >= 0; i-- {
		ent := m.Entries[i]
		touched[ent.Path] = true
		if !ent.Existed {
			err := f.r.Remove(rel(ent.Path))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("remove %s: %w", ent.Path, err)
			}
			res.Removed = append(res.Removed, ent.Path)
			continue
		}
		switch {
		case ent.Type == "symlink":
			err = f.symlinkAtomic(ent.Target, ent.Path)
		case ent.Copy != "":
			var data []byte
			if data, err = f.r.ReadFile(rel(path.Join(dir, ent.Copy))); err == nil {
				err = f.writeAtomic(ent.Path, data, goMode(ent.Mode))
			}
		default:
			err = f.r.Chmod(rel(ent.Path), goMode(ent.Mode))
		}
		if err == nil && ent.Type == "symlink" {
			err = f.r.Lchown(rel(ent.Path), ent.UID, ent.GID)
		} else if err == nil {
			err = f.r.Chown(rel(ent.Path), ent.UID, ent.GID)
			if err == nil {
				err = f.r.Chmod(rel(ent.Path), goMode(ent.Mode)) // chown may clear setuid bits
			}
		}
		if err != nil && !errors.Is(err, fs.ErrPermission) {
			return res, fmt.Errorf("restore %s: %w", ent.Path, err)
		}
		res.Restored = append(res.Restored, ent.Path)
	}
	for i := len(m.CreatedDirs) - 1; i >= 0; i-- {
		if err := f.r.Remove(rel(m.CreatedDirs[i])); err == nil {
			res.Removed = append(res.Removed, m.CreatedDirs[i])
		}
	}
	if live := opts.live(root); live != nil {
		if err := undoLive(ctx, live, touched, res); err != nil {
			return res, err
		}
	}
	// The manifest goes first: a backup without one is never used again.
	if err := f.r.Remove(rel(path.Join(dir, "manifest.json"))); err != nil {
		return res, err
	}
	return res, f.r.RemoveAll(rel(dir))
}

func undoLive(ctx context.Context, live Live, touched map[string]bool, res *UndoResult) error {
	has := func(prefix string) bool {
		for p := range touched {
			if strings.HasPrefix(p, prefix) {
				return true
			}
		}
		return false
	}
	type step struct {
		name string
		cond bool
		run  func() error
	}
	for _, s := range []step{
		{"sysctl --system", has("/etc/sysctl"), func() error { return live.ReloadSysctl(ctx) }},
		{"systemctl daemon-reload", has("/etc/systemd/"), func() error { return live.ReloadSystemd(ctx) }},
		{"nft delete table inet fleetmesh", touched[nftFile], func() error { return live.RemoveFirewall(ctx) }},
		{"reload sshd", has("/etc/ssh/"), func() error { return live.ReloadSSH(ctx) }},
		{"fail2ban-client reload", has("/etc/fail2ban/"), func() error { return live.ReloadFail2ban(ctx) }},
		{"augenrules --load", has("/etc/audit/"), func() error { return live.LoadAuditRules(ctx) }},
	} {
		if !s.cond {
			continue
		}
		res.Live = append(res.Live, s.name)
		if err := s.run(); err != nil {
			return fmt.Errorf("files restored, but the running system did not take them: %w", err)
		}
	}
	return nil
}

// latestBackup finds the newest complete backup.
func latestBackup(f *rootFS) (string, *manifest, error) {
	ents, err := f.readDir(BackupDir)
	if err != nil {
		return "", nil, err
	}
	for i := len(ents) - 1; i >= 0; i-- {
		dir := path.Join(BackupDir, ents[i].Name())
		data, err := f.r.ReadFile(rel(path.Join(dir, "manifest.json")))
		if err != nil {
			continue // incomplete
		}
		var m manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return "", nil, fmt.Errorf("backup %s: corrupt manifest: %w", dir, err)
		}
		return dir, &m, nil
	}
	return "", nil, ErrNothingToUndo
}
