package apps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
)

// SnapConfig configures a SnapDriver.
type SnapConfig struct {
	// StateFile records which snaps fleetmesh installed (snaps carry no
	// labels); usually dataDir/apps-snaps.json. Required.
	StateFile string
	// Runner runs snap. Default ExecRunner.
	Runner Runner
	Logger *slog.Logger
}

// SnapDriver runs TypeSnap applications with `snap install`. Snaps have no
// labels, so ownership is the driver's state file: a snap fleetmesh did not
// install (one already there when an application asked for it) is
// "adopted", kept at the requested channel, and never removed.
type SnapDriver struct {
	cfg SnapConfig
	log *slog.Logger
	mu  sync.Mutex
}

type snapRecord struct {
	Snap    string `json:"snap"`
	Channel string `json:"channel,omitempty"`
	Version string `json:"version"`
	Hash    string `json:"hash"`
	// Adopted snaps were installed before fleetmesh wanted them.
	Adopted bool `json:"adopted,omitempty"`
}

var _ interface {
	Driver
	Prober
} = (*SnapDriver)(nil)

// NewSnapDriver returns a driver for cfg.
func NewSnapDriver(cfg SnapConfig) (*SnapDriver, error) {
	if cfg.StateFile == "" {
		return nil, errors.New("snap driver: StateFile is required")
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &SnapDriver{cfg: cfg, log: log.With("component", "apps.snap")}, nil
}

func (d *SnapDriver) load() (map[string]snapRecord, error) {
	recs := map[string]snapRecord{}
	data, err := os.ReadFile(d.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snap state: %w", err)
	}
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, fmt.Errorf("snap state %s: %w", d.cfg.StateFile, err)
	}
	return recs, nil
}

func (d *SnapDriver) save(recs map[string]snapRecord) error {
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(d.cfg.StateFile, data, 0o600)
}

func (d *SnapDriver) installed(ctx context.Context, snap string) bool {
	_, err := d.cfg.Runner.Run(ctx, "snap", "list", snap)
	return err == nil
}

func channelArgs(ch string) []string {
	if ch == "" {
		return nil
	}
	return []string{"--channel=" + ch}
}

// Ensure implements Driver.
func (d *SnapDriver) Ensure(ctx context.Context, inst Instance, progress func(Status)) (Status, error) {
	fail := func(err error) (Status, error) { return Status{State: StateFailed, Message: err.Error()}, err }
	if inst.Type != TypeSnap {
		return fail(fmt.Errorf("snap driver: type %s: %w", inst.Type, ErrUnsupported))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	recs, err := d.load()
	if err != nil {
		return fail(err)
	}
	rec, known := recs[inst.App]
	if known && rec.Snap != inst.Image {
		// The application now names another snap: let go of the old one.
		if err := d.removeLocked(ctx, recs, inst.App); err != nil {
			return fail(err)
		}
		known = false
	}
	present := d.installed(ctx, inst.Image)
	switch {
	case known && rec.Hash == inst.Hash && present:
		return Status{State: StateRunning}, nil
	case !present:
		if progress != nil {
			progress(Status{State: StatePulling, Message: inst.Image})
		}
		d.log.Info("installing snap", "snap", inst.Image, "channel", inst.Channel)
		args := append([]string{"install", inst.Image}, channelArgs(inst.Channel)...)
		if _, err := d.cfg.Runner.Run(ctx, "snap", args...); err != nil {
			return fail(err)
		}
		rec = snapRecord{Adopted: known && rec.Adopted}
	case !known:
		d.log.Info("adopting snap already installed; it will not be removed", "snap", inst.Image)
		rec = snapRecord{Adopted: true}
		fallthrough
	default:
		if inst.Channel != "" && inst.Channel != rec.Channel {
			args := append([]string{"refresh", inst.Image}, channelArgs(inst.Channel)...)
			if _, err := d.cfg.Runner.Run(ctx, "snap", args...); err != nil {
				return fail(err)
			}
		}
	}
	rec.Snap, rec.Channel, rec.Version, rec.Hash = inst.Image, inst.Channel, inst.Version, inst.Hash
	recs[inst.App] = rec
	if err := d.save(recs); err != nil {
		return fail(err)
	}
	return Status{State: StateRunning}, nil
}

// Remove implements Driver.
func (d *SnapDriver) Remove(ctx context.Context, app string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	recs, err := d.load()
	if err != nil {
		return err
	}
	return d.removeLocked(ctx, recs, app)
}

func (d *SnapDriver) removeLocked(ctx context.Context, recs map[string]snapRecord, app string) error {
	rec, ok := recs[app]
	if !ok {
		return nil
	}
	if !rec.Adopted && d.installed(ctx, rec.Snap) {
		d.log.Info("removing snap", "snap", rec.Snap)
		if _, err := d.cfg.Runner.Run(ctx, "snap", "remove", rec.Snap); err != nil {
			return err
		}
	}
	delete(recs, app)
	return d.save(recs)
}

// List implements Driver.
func (d *SnapDriver) List(ctx context.Context) ([]Observed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	recs, err := d.load()
	if err != nil {
		return nil, err
	}
	out := make([]Observed, 0, len(recs))
	for app, rec := range recs {
		st := Status{State: StateRunning}
		if !d.installed(ctx, rec.Snap) {
			st = Status{State: StateFailed, Message: "snap " + rec.Snap + " is not installed"}
		}
		out = append(out, Observed{App: app, Version: rec.Version, Hash: rec.Hash, Status: st})
	}
	return out, nil
}

// Endpoint implements Prober: snaps listen on the host.
func (d *SnapDriver) Endpoint(_ context.Context, _ string, port int) (string, error) {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Exec implements Prober: the command runs on the host.
func (d *SnapDriver) Exec(ctx context.Context, _ string, cmd []string) (int, error) {
	_, err := d.cfg.Runner.Run(ctx, cmd[0], cmd[1:]...)
	return exitStatus(err)
}
