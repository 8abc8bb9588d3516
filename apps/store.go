package apps

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LastAppliedFile is the store's file name in the node's data dir.
const LastAppliedFile = "apps-last-applied.json"

// LastApplied keeps the desired applications on disk, so that a device
// that reboots while cut off from every gateway starts its applications
// from what it was last told. Writes are atomic: a crash leaves the old
// file or the new one, never a torn one.
type LastApplied struct {
	path string
}

// NewLastApplied returns the store at dataDir/LastAppliedFile.
func NewLastApplied(dataDir string) *LastApplied {
	return &LastApplied{path: filepath.Join(dataDir, LastAppliedFile)}
}

// Path is the store's file.
func (s *LastApplied) Path() string { return s.path }

// Desired is the full set of applications the spec holds at one index;
// each node picks the ones whose selector matches it.
type Desired struct {
	// Index is the spec version (Raft index) the set was taken from.
	Index uint64      `json:"index"`
	Apps  []*Manifest `json:"apps"`
}

type lastAppliedFile struct {
	Format  int               `json:"format"`
	SavedAt time.Time         `json:"savedAt"`
	Index   uint64            `json:"index"`
	Apps    []json.RawMessage `json:"apps"`
}

const lastAppliedFormat = 1

// Save writes d atomically: a temporary file in the same directory,
// fsync, rename over the old file, fsync of the directory.
func (s *LastApplied) Save(d Desired) error {
	f := lastAppliedFile{Format: lastAppliedFormat, SavedAt: time.Now().UTC(), Index: d.Index}
	for _, m := range d.Apps {
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("last-applied: %w", err)
		}
		f.Apps = append(f.Apps, b)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("last-applied: %w", err)
	}
	return writeFileAtomic(s.path, data, 0o600)
}

// Load reads the stored set. ok is false when there is no file or it cannot
// be read as a whole. Each manifest is parsed and validated again; one that
// no longer passes (say, after a downgrade of the agent) is left out and
// reported in err, and the rest are returned with ok true.
func (s *LastApplied) Load() (d Desired, ok bool, err error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Desired{}, false, nil
	}
	if err != nil {
		return Desired{}, false, fmt.Errorf("last-applied: %w", err)
	}
	var f lastAppliedFile
	if err := json.Unmarshal(data, &f); err != nil {
		return Desired{}, false, fmt.Errorf("last-applied %s: %w", s.path, err)
	}
	if f.Format != lastAppliedFormat {
		return Desired{}, false, fmt.Errorf("last-applied %s: format %d is not %d", s.path, f.Format, lastAppliedFormat)
	}
	d = Desired{Index: f.Index}
	var errs []error
	for i, raw := range f.Apps {
		// Policy was checked when the manifest was committed; the
		// stored copy is trusted with it.
		m, err := ParseAndValidate(raw, ValidateOptions{AllowPrivileged: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("last-applied %s: apps[%d]: %w", s.path, i, err))
			continue
		}
		d.Apps = append(d.Apps, m)
	}
	return d, true, errors.Join(errs...)
}

// writeFileAtomic replaces path with data so that readers and crashes see
// either the old content or the new, never a mix.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
