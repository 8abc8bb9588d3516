package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/fleetmesh/fleetmesh/node"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// agentFile is the agent's config file. Unknown keys are errors; pointers
// keep "unset" apart from false and zero.
type agentFile struct {
	DataDir        *string           `yaml:"data_dir"`
	Name           *string           `yaml:"name"`
	Role           *string           `yaml:"role"`
	Site           *string           `yaml:"site"`
	Labels         map[string]string `yaml:"labels"`
	Bind           *string           `yaml:"bind"`
	API            *string           `yaml:"api"`
	AdvertiseAPI   *string           `yaml:"advertise_api"`
	Raft           *string           `yaml:"raft"`
	Join           *string           `yaml:"join"`
	JoinTimeout    *string           `yaml:"join_timeout"`
	Bootstrap      *bool             `yaml:"bootstrap"`
	HealthInterval *string           `yaml:"health_interval"`
	MetricsOpen    *bool             `yaml:"metrics_open"`
	LogLevel       *string           `yaml:"log_level"`
	Timings        agentTimings      `yaml:"timings"`
}

// agentTimings loosen (or tighten) failure detection and Raft for the
// fleet's network; unset ones keep the defaults (mesh.Default*,
// consensus.Default*). Gateways at sites joined by slow or lossy links
// raise the Raft ones and the mesh's probe_interval and suspicion_floor
// (BENCHMARKS.md has the trade-offs).
type agentTimings struct {
	ProbeInterval   *string `yaml:"probe_interval"`
	ProbeTimeout    *string `yaml:"probe_timeout"`
	SuspicionMult   *int    `yaml:"suspicion_mult"`
	SuspicionFloor  *string `yaml:"suspicion_floor"`
	GossipInterval  *string `yaml:"gossip_interval"`
	RaftHeartbeat   *string `yaml:"raft_heartbeat_timeout"`
	RaftElection    *string `yaml:"raft_election_timeout"`
	RaftLeaderLease *string `yaml:"raft_leader_lease_timeout"`
	RaftCommit      *string `yaml:"raft_commit_timeout"`
}

// apply sets the timings given in the file on cfg, with errors that name
// the key.
func (t agentTimings) apply(cfg *node.Config) error {
	durs := []struct {
		key string
		val *string
		dst *time.Duration
	}{
		{"probe_interval", t.ProbeInterval, &cfg.Mesh.ProbeInterval},
		{"probe_timeout", t.ProbeTimeout, &cfg.Mesh.ProbeTimeout},
		{"gossip_interval", t.GossipInterval, &cfg.Mesh.GossipInterval},
		{"suspicion_floor", t.SuspicionFloor, &cfg.Mesh.SuspicionFloor},
		{"raft_heartbeat_timeout", t.RaftHeartbeat, &cfg.Raft.HeartbeatTimeout},
		{"raft_election_timeout", t.RaftElection, &cfg.Raft.ElectionTimeout},
		{"raft_leader_lease_timeout", t.RaftLeaderLease, &cfg.Raft.LeaderLeaseTimeout},
		{"raft_commit_timeout", t.RaftCommit, &cfg.Raft.CommitTimeout},
	}
	for _, d := range durs {
		if d.val == nil {
			continue
		}
		v, err := time.ParseDuration(*d.val)
		if err != nil || v <= 0 {
			return fmt.Errorf("--config: timings.%s: %q is not a positive duration (like 150ms)", d.key, *d.val)
		}
		*d.dst = v
	}
	if t.SuspicionMult != nil {
		if *t.SuspicionMult < 1 {
			return fmt.Errorf("--config: timings.suspicion_mult: %d must be 1 or more", *t.SuspicionMult)
		}
		cfg.Mesh.SuspicionMult = *t.SuspicionMult
	}
	probe, timeout := cmp.Or(cfg.Mesh.ProbeInterval, mesh.DefaultProbeInterval), cmp.Or(cfg.Mesh.ProbeTimeout, mesh.DefaultProbeTimeout)
	if timeout >= probe {
		return fmt.Errorf("--config: timings.probe_timeout (%v) must be shorter than timings.probe_interval (%v)", timeout, probe)
	}
	hb, lease := cmp.Or(cfg.Raft.HeartbeatTimeout, consensus.DefaultHeartbeatTimeout), cmp.Or(cfg.Raft.LeaderLeaseTimeout, consensus.DefaultLeaderLeaseTimeout)
	if lease > hb {
		return fmt.Errorf("--config: timings.raft_leader_lease_timeout (%v) must not exceed timings.raft_heartbeat_timeout (%v)", lease, hb)
	}
	return nil
}

type agentFlags struct {
	config, dataDir, name, role, site, bind, api, advertiseAPI, raft, join, logLevel string
	labels                                                                           []string
	bootstrap, metricsOpen                                                           bool
	healthInterval, joinTimeout                                                      time.Duration
}

func newAgentCmd() *cobra.Command {
	var fl agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run this device's node",
		Long: `Run this device's fleetmesh node.

The first gateway creates the fleet with --bootstrap; every other device joins
with --join TOKEN (from 'fleetmesh token create'). A restart with the same
--data-dir rejoins with no token. Settings come from defaults, then --config
FILE (YAML), then flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, level, err := agentConfig(cmd, &fl)
			if err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			cfg.Logger = logger
			return runAgent(cmd.Context(), cmd.OutOrStdout(), cfg)
		},
	}
	addAgentFlags(cmd, &fl)
	return cmd
}

// addAgentFlags defines the agent's flags on cmd, bound to fl.
func addAgentFlags(cmd *cobra.Command, fl *agentFlags) {
	f := cmd.Flags()
	f.StringVar(&fl.config, "config", "", "YAML config file")
	f.StringVar(&fl.dataDir, "data-dir", "/var/lib/fleetmesh", "data directory (identity, keys, state)")
	f.StringVar(&fl.name, "name", "", "node name (default: host name)")
	f.StringVar(&fl.role, "role", "", "gateway, sensor, compute, storage or hybrid")
	f.StringVar(&fl.site, "site", "", "site name")
	f.StringArrayVar(&fl.labels, "label", nil, "label key=value (repeatable)")
	f.StringVar(&fl.bind, "bind", "0.0.0.0:7946", "gossip address (a restart keeps the stored one)")
	f.StringVar(&fl.api, "api", "", "HTTPS API address (default: gossip host, port 7400; a restart keeps the stored one)")
	f.StringVar(&fl.advertiseAPI, "advertise-api", "", "API address peers should use (default: derived)")
	f.StringVar(&fl.raft, "raft", "", "Raft address for gateways (default: gossip host, port 7947)")
	f.StringVar(&fl.join, "join", "", "join token")
	f.DurationVar(&fl.joinTimeout, "join-timeout", 0, "give up a join no fleet address answers after this long (0: keep trying until stopped)")
	f.BoolVar(&fl.bootstrap, "bootstrap", false, "create a new fleet with this gateway")
	f.BoolVar(&fl.metricsOpen, "metrics-open", false, "serve /metrics without a credential")
	f.DurationVar(&fl.healthInterval, "health-interval", node.DefaultHealthInterval, "how often health is gossiped")
	f.StringVar(&fl.logLevel, "log-level", "info", "debug, info, warn or error")
}

// agentConfig layers defaults, the config file and flags.
func agentConfig(cmd *cobra.Command, fl *agentFlags) (node.Config, slog.Level, error) {
	f := cmd.Flags()
	var file agentFile
	if fl.config != "" {
		b, err := os.ReadFile(fl.config)
		if err != nil {
			return node.Config{}, 0, fmt.Errorf("--config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
			return node.Config{}, 0, fmt.Errorf("--config %s: %w", fl.config, err)
		}
	}
	pick := func(flag string, flagVal string, fileVal *string) string {
		if f.Changed(flag) || fileVal == nil {
			return flagVal
		}
		return *fileVal
	}
	// Addresses left unset stay empty, so a restart takes them from the
	// data dir (and a new node from the agent's defaults).
	pickAddr := func(flag string, flagVal string, fileVal *string) string {
		switch {
		case f.Changed(flag):
			return flagVal
		case fileVal != nil:
			return *fileVal
		}
		return ""
	}
	pickBool := func(flag string, flagVal bool, fileVal *bool) bool {
		if f.Changed(flag) || fileVal == nil {
			return flagVal
		}
		return *fileVal
	}
	cfg := node.Config{
		DataDir:      pick("data-dir", fl.dataDir, file.DataDir),
		Name:         pick("name", fl.name, file.Name),
		Role:         pick("role", fl.role, file.Role),
		Site:         pick("site", fl.site, file.Site),
		Bind:         pickAddr("bind", fl.bind, file.Bind),
		API:          pickAddr("api", fl.api, file.API),
		AdvertiseAPI: pickAddr("advertise-api", fl.advertiseAPI, file.AdvertiseAPI),
		RaftBind:     pickAddr("raft", fl.raft, file.Raft),
		Join:         pick("join", fl.join, file.Join),
		Bootstrap:    pickBool("bootstrap", fl.bootstrap, file.Bootstrap),
		MetricsOpen:  pickBool("metrics-open", fl.metricsOpen, file.MetricsOpen),
		Labels:       file.Labels,
	}
	if err := file.Timings.apply(&cfg); err != nil {
		return cfg, 0, err
	}
	cfg.HealthInterval = fl.healthInterval
	cfg.JoinTimeout = fl.joinTimeout
	if !f.Changed("join-timeout") && file.JoinTimeout != nil {
		d, err := time.ParseDuration(*file.JoinTimeout)
		if err != nil || d < 0 {
			return cfg, 0, fmt.Errorf("--config: join_timeout: %q is not a duration of 0 or more (like 10m; 0 keeps trying)", *file.JoinTimeout)
		}
		cfg.JoinTimeout = d
	}
	if !f.Changed("health-interval") && file.HealthInterval != nil {
		d, err := time.ParseDuration(*file.HealthInterval)
		if err != nil {
			return cfg, 0, fmt.Errorf("--config: health_interval: %q is not a duration", *file.HealthInterval)
		}
		cfg.HealthInterval = d
	}
	if f.Changed("label") || cfg.Labels == nil {
		if len(fl.labels) > 0 {
			cfg.Labels = map[string]string{}
		}
		for _, l := range fl.labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return cfg, 0, fmt.Errorf("--label: %q is not key=value", l)
			}
			cfg.Labels[k] = v
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(pick("log-level", fl.logLevel, file.LogLevel))); err != nil {
		return cfg, 0, fmt.Errorf("--log-level: %q is not debug, info, warn or error", fl.logLevel)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, 0, err
	}
	return cfg, level, nil
}

// runAgent runs a node until SIGINT/SIGTERM or ctx ends, then leaves
// gracefully.
func runAgent(ctx context.Context, out io.Writer, cfg node.Config) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.StartContext(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "fleetmesh agent %s running: name %s, role %s, API https://%s\n", node.Version, n.Name(), n.Role(), n.APIAddr())
	if cfg.Bootstrap && n.OperatorToken != "" {
		fmt.Fprintf(out, "New fleet created. Operator credential: %s (mode 0600)\n", filepath.Join(cfg.DataDir, "operator.token"))
		fmt.Fprintf(out, "Fleet CA certificate: %s\n", filepath.Join(cfg.DataDir, "ca.pem"))
	}
	<-ctx.Done()
	fmt.Fprintln(out, "leaving the fleet...")
	return n.Close()
}
