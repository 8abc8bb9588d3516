package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/spf13/cobra"
)

// demoNode is one member of the demo fleet.
type demoNode struct{ name, role, site string }

var demoFleet = []demoNode{
	{"gw1", "gateway", "plant-a"}, {"gw2", "gateway", "plant-a"}, {"gw3", "gateway", "plant-b"},
	{"sensor-a1", "sensor", "plant-a"}, {"sensor-a2", "sensor", "plant-a"}, {"compute-a1", "compute", "plant-a"},
	{"sensor-b1", "sensor", "plant-b"}, {"storage-b1", "storage", "plant-b"}, {"hybrid-b1", "hybrid", "plant-b"},
}

func newDemoCmd() *cobra.Command {
	var dir string
	var apiPort int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole local fleet on loopback (3 gateways, 6 edge nodes, 2 sites)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dir == "" {
				d, err := os.MkdirTemp("", "fleetmesh-demo-")
				if err != nil {
					return err
				}
				dir = d
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			out := cmd.OutOrStdout()
			logf, err := os.OpenFile(filepath.Join(dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			defer logf.Close()
			logger := slog.New(slog.NewTextHandler(logf, nil))
			fmt.Fprintf(out, "Starting a demo fleet of %d nodes in %s ...\n", len(demoFleet), dir)
			var nodes []*node.Node
			defer func() {
				for i := len(nodes) - 1; i >= 0; i-- {
					nodes[i].Close()
				}
			}()
			var admin string
			var ca []byte
			for i, d := range demoFleet {
				apiAddr := "127.0.0.1:0"
				if i == 0 && apiPort > 0 {
					apiAddr = fmt.Sprintf("127.0.0.1:%d", apiPort)
				}
				cfg := node.Config{DataDir: filepath.Join(dir, d.name), Name: d.name, Role: d.role, Site: d.site,
					Bind: "127.0.0.1:0", API: apiAddr, RaftBind: "127.0.0.1:0", Logger: logger.With("node", d.name),
					HealthInterval: time.Second,
					// All demo nodes share this machine's Docker engine.
					Apps: node.AppsConfig{ContainerPrefix: "fmdemo-"},
					// The demo simulates devices on this one machine: each
					// checks (and may apply) the security policy to its own
					// scratch root, never to this host's /.
					Hardening: node.HardeningConfig{Root: filepath.Join(dir, d.name+"-root")}}
				if i == 0 {
					cfg.Bootstrap = true
				} else {
					tok, err := demoToken(ctx, nodes[0].APIAddr(), admin, ca, d.role)
					if err != nil {
						return err
					}
					cfg.Join = tok
				}
				if err := os.MkdirAll(cfg.Hardening.Root, 0o755); err != nil {
					return err
				}
				n, err := node.Start(cfg)
				if err != nil && i == 0 && apiPort > 0 && errors.Is(err, syscall.EADDRINUSE) {
					fmt.Fprintf(out, "port %d is taken; using a free one\n", apiPort)
					cfg.API = "127.0.0.1:0"
					n, err = node.Start(cfg)
				}
				if err != nil {
					return fmt.Errorf("start %s: %w", d.name, err)
				}
				nodes = append(nodes, n)
				if i == 0 {
					admin, ca = n.OperatorToken, n.CAPEM()
				}
				fmt.Fprintf(out, "  %-11s %-8s %-8s https://%s\n", d.name, d.role, d.site, n.APIAddr())
			}
			caPath := filepath.Join(dir, "gw1", "ca.pem")
			fmt.Fprintf(out, "\nThe fleet is up. API: https://%s  (any node's API answers for the whole fleet)\n", nodes[0].APIAddr())
			fmt.Fprintf(out, "Operator credential: %s\n", admin)
			fmt.Fprintf(out, "Fleet CA: %s\n\nIn another terminal:\n", caPath)
			fmt.Fprintf(out, "  export FLEETMESH_ADDR=%s FLEETMESH_TOKEN=%s FLEETMESH_CACERT=%s\n", nodes[0].APIAddr(), admin, caPath)
			fmt.Fprintf(out, "  fleetmesh status && fleetmesh nodes\n\nLogs: %s. Press Ctrl-C to stop the fleet.\n", filepath.Join(dir, "demo.log"))
			<-ctx.Done()
			fmt.Fprintln(out, "\nStopping the demo fleet...")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the nodes' data dirs (default: a new temporary dir)")
	cmd.Flags().IntVar(&apiPort, "api-port", 7400, "API port of the first gateway (0: any free port)")
	return cmd
}

func demoToken(ctx context.Context, addr, admin string, ca []byte, role string) (string, error) {
	c, err := api.NewClient(addr, admin, ca)
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := c.CreateToken(ctx, api.TokenCreateRequest{Role: role, TTL: "10m", Uses: 1})
		if err == nil {
			return r.Token, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("demo: create a %s token: %w", role, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
