package hardening

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// rootFS reads and writes files below a root directory as if it were "/".
// Every access goes through os.Root, so no path (or symlink) in the tree can
// reach outside it; absolute symlinks are resolved against the root, the way
// the system booted from it would see them.
type rootFS struct {
	r   *os.Root
	dir string
}

func openRoot(dir string) (*rootFS, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", dir, err)
	}
	return &rootFS{r: r, dir: dir}, nil
}

func (f *rootFS) Close() error { return f.r.Close() }

// rel turns an absolute in-root path into the relative name os.Root wants.
func rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// resolve follows symlinks in the last element of p the way a chroot would
// and returns the in-root path of the final target.
func (f *rootFS) resolve(p string) (string, error) {
	p = path.Clean("/" + p)
	for range 16 {
		fi, err := f.r.Lstat(rel(p))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return p, err
		}
		target, err := f.r.Readlink(rel(p))
		if err != nil {
			return p, err
		}
		if path.IsAbs(target) {
			p = path.Clean(target)
		} else {
			p = path.Join(path.Dir(p), target)
		}
	}
	return p, fmt.Errorf("%s: too many levels of symbolic links", p)
}

func (f *rootFS) readFile(p string) ([]byte, error) {
	rp, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	return f.r.ReadFile(rel(rp))
}

func (f *rootFS) stat(p string) (fs.FileInfo, error) {
	rp, err := f.resolve(p)
	if err != nil {
		return nil, err
	}
	return f.r.Lstat(rel(rp))
}

func (f *rootFS) lstat(p string) (fs.FileInfo, error) { return f.r.Lstat(rel(p)) }

func (f *rootFS) readlink(p string) (string, error) { return f.r.Readlink(rel(p)) }

func (f *rootFS) exists(p string) bool {
	_, err := f.stat(p)
	return err == nil
}

// readDir lists a directory's entries sorted by name; a missing directory
// is empty.
func (f *rootFS) readDir(p string) ([]fs.DirEntry, error) {
	rp, err := f.resolve(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d, err := f.r.Open(rel(rp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ents, err := d.ReadDir(-1)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, err
}

// glob returns the paths in dir whose names match pattern, sorted.
func (f *rootFS) glob(dir, pattern string) []string {
	ents, _ := f.readDir(dir)
	var out []string
	for _, e := range ents {
		if ok, _ := path.Match(pattern, e.Name()); ok {
			out = append(out, path.Join(dir, e.Name()))
		}
	}
	return out
}

// mkdirAll creates dir and its missing parents with mode 0755 and returns
// the directories it created, outermost first.
func (f *rootFS) mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := path.Clean("/" + dir); d != "/"; d = path.Dir(d) {
		if _, err := f.stat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		if err := f.r.Mkdir(rel(d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
	}
	return missing, nil
}

// writeAtomic replaces p with data: it writes a temporary file in the same
// directory, gives it mode (and the owner of the file it replaces), syncs
// it, renames it over p and syncs the directory. A reader sees the old file
// or the new one, never a mix.
func (f *rootFS) writeAtomic(p string, data []byte, mode fs.FileMode) error {
	dir := path.Dir(p)
	tmp := path.Join(dir, fmt.Sprintf(".%s.fleetmesh-%016x.tmp", path.Base(p), rand.Uint64()))
	fh, err := f.r.OpenFile(rel(tmp), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			fh.Close()
			f.r.Remove(rel(tmp))
		}
	}()
	if _, err := fh.Write(data); err != nil {
		return err
	}
	if fi, err := f.r.Lstat(rel(p)); err == nil {
		if st, isSys := fi.Sys().(*syscall.Stat_t); isSys {
			if err := fh.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
				return err
			}
		}
	}
	if err := fh.Chmod(mode); err != nil {
		return err
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := f.r.Rename(rel(tmp), rel(p)); err != nil {
		return err
	}
	ok = true
	return f.syncDir(dir)
}

func (f *rootFS) syncDir(dir string) error {
	d, err := f.r.Open(rel(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// symlinkAtomic points p at target, replacing whatever p was.
func (f *rootFS) symlinkAtomic(target, p string) error {
	tmp := path.Join(path.Dir(p), fmt.Sprintf(".%s.fleetmesh-%016x.tmp", path.Base(p), rand.Uint64()))
	if err := f.r.Symlink(target, rel(tmp)); err != nil {
		return err
	}
	if err := f.r.Rename(rel(tmp), rel(p)); err != nil {
		f.r.Remove(rel(tmp))
		return err
	}
	return f.syncDir(path.Dir(p))
}
