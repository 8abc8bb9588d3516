package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fleetmesh/fleetmesh/node/jointoken"
)

// Registrar records, in a running fleet, the devices that are about to be
// provisioned, so the fleet lists them as "provisioning" until they join
// (then "initializing", then "ready") and shows which never came up. The
// fleet API client implements it; RegisterExpected must be idempotent by
// profile id, because a provision run that fails after registering is
// retried with the same profiles.
type Registrar interface {
	RegisterExpected(ctx context.Context, p Profile) error
}

// Options of Provision.
type Options struct {
	// Registrar, when set, pre-registers every device after all seeds are
	// rendered and before anything is written. Nil skips pre-registration.
	Registrar Registrar
}

// Result says what Provision wrote.
type Result struct {
	Dir   string
	Seeds []*Seed
	// SeedDirs are the directories holding each device's seed, in the
	// order of the fleet.
	SeedDirs []string
}

// Provision renders a seed for every device of the fleet and writes them to
// out: the three files straight into out for a single-device profile, one
// directory per device named by hostname for a fleet file. out must not exist
// or be an empty directory. Everything is validated and rendered first, then
// written into a temporary directory beside out and renamed into place: on
// any error nothing is left behind.
func Provision(ctx context.Context, fl *Fleet, tok jointoken.Token, out string, opts Options) (*Result, error) {
	if len(fl.Devices) == 0 {
		return nil, fmt.Errorf("%w: no devices", ErrInvalidProfile)
	}
	if fl.Single {
		if err := fl.Devices[0].Validate(); err != nil {
			return nil, err
		}
	} else if err := ValidateFleet(fl.Devices); err != nil {
		return nil, err
	}
	if err := tok.Validate(); err != nil {
		return nil, err
	}
	if err := checkOutDir(out); err != nil {
		return nil, err
	}
	res := &Result{Dir: out}
	for i := range fl.Devices {
		s, err := GenerateSeed(&fl.Devices[i], tok)
		if err != nil {
			return nil, fmt.Errorf("devices[%d]: %w", i, err)
		}
		res.Seeds = append(res.Seeds, s)
	}
	if opts.Registrar != nil {
		for i := range fl.Devices {
			if err := opts.Registrar.RegisterExpected(ctx, fl.Devices[i]); err != nil {
				return nil, fmt.Errorf("pre-register %s: %w", fl.Devices[i].Hostname, err)
			}
		}
	}

	parent := filepath.Dir(filepath.Clean(out))
	tmp, err := os.MkdirTemp(parent, ".fleetmesh-seed-*")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	for _, s := range res.Seeds {
		dir := tmp
		if !fl.Single {
			dir = filepath.Join(tmp, s.Hostname)
			if err := os.Mkdir(dir, 0o700); err != nil {
				return nil, err
			}
		}
		for name, data := range s.Files() {
			if err := writeFileSync(filepath.Join(dir, name), data, 0o600); err != nil {
				return nil, err
			}
		}
		if !fl.Single {
			if err := syncDir(dir); err != nil {
				return nil, err
			}
		}
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	// rename(2) replaces an empty directory atomically; os.Rename would
	// refuse an existing directory.
	if err := syscall.Rename(tmp, out); err != nil {
		return nil, fmt.Errorf("move seed into place at %s: %w", out, err)
	}
	done = true
	if err := syncDir(parent); err != nil {
		return nil, err
	}
	for _, s := range res.Seeds {
		if fl.Single {
			res.SeedDirs = append(res.SeedDirs, out)
		} else {
			res.SeedDirs = append(res.SeedDirs, filepath.Join(out, s.Hostname))
		}
	}
	return res, nil
}

func checkOutDir(out string) error {
	entries, err := os.ReadDir(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(entries) > 0:
		return fmt.Errorf("%w: %s (pick a new one or empty it)", ErrOutputExists, out)
	}
	return nil
}

func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
