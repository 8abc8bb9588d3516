package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/node/provision"
	"github.com/spf13/cobra"
)

// tokenFlags is how provisioning commands take the join token: on the command
// line, or from a file so it stays out of shell history.
type tokenFlags struct {
	token, file string
}

func (t *tokenFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.token, "token", "", "join token (from 'fleetmesh token create')")
	cmd.Flags().StringVar(&t.file, "token-file", "", "read the join token from this file instead of --token")
}

func (t *tokenFlags) parse() (jointoken.Token, error) {
	s := t.token
	switch {
	case s != "" && t.file != "":
		return jointoken.Token{}, errors.New("give --token or --token-file, not both")
	case t.file != "":
		b, err := os.ReadFile(t.file)
		if err != nil {
			return jointoken.Token{}, err
		}
		s = strings.TrimSpace(string(b))
	case s == "":
		return jointoken.Token{}, errors.New("a join token is required: --token TOKEN or --token-file FILE (make one with 'fleetmesh token create')")
	}
	return jointoken.Parse(s) // its errors never contain the secret
}

func validOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o %q: want table or json", o)
	}
	return nil
}

func newProvisionCmd() *cobra.Command {
	var (
		file, out, output string
		tok               tokenFlags
		register          bool
		reg               clientFlags
	)
	cmd := &cobra.Command{
		Use:   "provision -f PROFILE --token TOKEN --out DIR",
		Short: "Write cloud-init NoCloud seeds for new devices",
		Long: `Validates a device profile (YAML) or fleet file (YAML list, or CSV with a
header row) and writes a cloud-init NoCloud seed: user-data, meta-data and
network-config. A single profile's seed goes straight into DIR; a fleet file
gives one directory per device, named by hostname. DIR must not exist or be
empty. Nothing is written unless every device is valid.

The seed holds the join token: its files are mode 0600.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			if file == "" || out == "" {
				return errors.New("-f PROFILE and --out DIR are required")
			}
			t, err := tok.parse()
			if err != nil {
				return err
			}
			fl, err := provision.LoadFile(file)
			if err != nil {
				return err
			}
			var opts provision.Options
			if register {
				c, err := reg.client()
				if err != nil {
					return fmt.Errorf("--register: %w", err)
				}
				opts.Registrar = apiRegistrar{c}
			}
			res, err := provision.Provision(cmd.Context(), fl, t, out, opts)
			if err != nil {
				return err
			}
			type row struct {
				ID       string `json:"id"`
				Hostname string `json:"hostname"`
				Role     string `json:"role"`
				Model    string `json:"model"`
				Site     string `json:"site"`
				Seed     string `json:"seed"`
			}
			rows := make([]row, len(fl.Devices))
			for i, p := range fl.Devices {
				rows[i] = row{p.ID, p.Hostname, string(p.Role), string(p.Model), p.Site, res.SeedDirs[i]}
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(w, map[string]any{"token": t.Redacted(), "devices": rows})
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOSTNAME\tROLE\tMODEL\tSITE\tSEED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Hostname, r.Role, r.Model, r.Site, r.Seed)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "%d seed(s) for token %s\n", len(rows), t.Redacted())
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "device profile (YAML) or fleet file (YAML list or .csv)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (must not exist, or be empty)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&register, "register", false, "pre-register the devices with the fleet (they show as provisioning until they join)")
	cmd.Flags().StringVar(&reg.addr, "addr", "", "with --register: node API address (default $FLEETMESH_ADDR)")
	cmd.Flags().StringVar(&reg.token, "operator-token", "", "with --register: operator credential (default $FLEETMESH_TOKEN)")
	cmd.Flags().StringVar(&reg.caCert, "ca-cert", "", "with --register: fleet CA certificate (default $FLEETMESH_CACERT)")
	tok.register(cmd)
	return cmd
}

// apiRegistrar pre-registers devices through a node's API.
type apiRegistrar struct{ c *api.Client }

func (r apiRegistrar) RegisterExpected(ctx context.Context, p provision.Profile) error {
	_, err := r.c.RegisterDevice(ctx, api.DeviceRegisterRequest{Name: p.Hostname, Role: string(p.Role), Site: p.Site,
		Labels: p.Labels, Model: string(p.Model), Serial: p.Serial})
	if err != nil {
		return fmt.Errorf("pre-register %s: %w", p.Hostname, err)
	}
	return nil
}
