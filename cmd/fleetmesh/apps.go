package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/spf13/cobra"
)

func newAppsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "apps", Short: "Deploy and inspect applications"}
	cmd.AddCommand(newAppsDeployCmd(), newAppsListCmd(), newAppsShowCmd(), newAppsRemoveCmd(), newAppsTemplateCmd())
	return cmd
}

func newAppsDeployCmd() *cobra.Command {
	var cf clientFlags
	var file string
	cmd := &cobra.Command{
		Use:   "deploy -f FILE",
		Short: "Deploy an EdgeApplication manifest (YAML or JSON; - reads stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f: required: the manifest file (or - for stdin)")
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("-f: %w", err)
			}
			// Check locally first, so a typo is reported without a round trip.
			if _, err := apps.ParseAndValidate(data, apps.ValidateOptions{AllowPrivileged: true}); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.DeployApp(cmd.Context(), data)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deployed %s %s (spec version %d)\n", r.Name, r.Version, r.Index)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest file")
	cf.register(cmd, true)
	return cmd
}

func newAppsListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List applications and how many devices run them",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Apps(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tTYPE\tSELECTOR\tDEVICES")
			for _, a := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, a.Version, a.Type, selectorString(a.Selector), counts(a.Nodes))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	return cmd
}

func selectorString(sel map[string]any) string {
	if len(sel) == 0 {
		return "all devices"
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, sel[k]))
	}
	return strings.Join(parts, ",")
}

func newAppsShowCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an application and its status on every device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			d, err := c.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), d)
			}
			out := cmd.OutOrStdout()
			var versions []string
			for _, v := range d.Versions {
				versions = append(versions, v.Version)
			}
			fmt.Fprintf(out, "Application %s, version %s (history: %s)\n\n", d.Name, d.Version, strings.Join(versions, ", "))
			tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tVERSION\tSTATUS\tSINCE\tMESSAGE")
			for _, n := range d.Nodes {
				st := n.Status
				if !n.Online {
					st += " (node offline)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Node, n.Version, st, ago(n.Since), n.Message)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	return cmd
}

func newAppsRemoveCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove an application from every device (its history stays in the spec)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.RemoveApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s (spec version %d)\n", args[0], r.Index)
			return nil
		},
	}
	cf.register(cmd, false)
	return cmd
}
