package main

import (
	"encoding/json"
	"fmt"

	"github.com/fleetmesh/fleetmesh/apps"
	"github.com/spf13/cobra"
)

// newAppsTemplateCmd is `fleetmesh apps template [NAME]`: print a built-in
// EdgeApplication manifest to edit and deploy, or list the templates. It
// needs no node: the templates are compiled in.
func newAppsTemplateCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "template [NAME]",
		Short: "Print a built-in application manifest (mosquitto, node-red, telegraf, k3s)",
		Long: "Print a built-in EdgeApplication manifest to edit and deploy with\n" +
			"`fleetmesh apps deploy -f FILE`. Without NAME, list the templates.",
		Example: "  fleetmesh apps template mosquitto > mosquitto.yaml",
		Args:    cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return apps.TemplateNames(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				return printTemplateList(cmd, output)
			}
			data, err := apps.TemplateYAML(args[0])
			if err != nil {
				return err
			}
			switch output {
			case "", "yaml":
				_, err = out.Write(data)
				return err
			case "json":
				m, err := apps.Template(args[0])
				if err != nil {
					return err
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(m)
			default:
				return fmt.Errorf("--output %q: use yaml or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml (the default) or json")
	return cmd
}

func printTemplateList(cmd *cobra.Command, output string) error {
	type row struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Type    string `json:"type"`
		Role    string `json:"role"`
	}
	var rows []row
	for _, name := range apps.TemplateNames() {
		m, err := apps.Template(name)
		if err != nil {
			return err
		}
		rows = append(rows, row{name, m.Metadata.Version, string(m.Spec.Deployment.Type), m.Spec.Selector.Role})
	}
	out := cmd.OutOrStdout()
	switch output {
	case "", "yaml":
		fmt.Fprintf(out, "%-12s %-14s %-10s %s\n", "NAME", "VERSION", "TYPE", "ROLE")
		for _, r := range rows {
			fmt.Fprintf(out, "%-12s %-14s %-10s %s\n", r.Name, r.Version, r.Type, r.Role)
		}
		return nil
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	default:
		return fmt.Errorf("--output %q: use json, or leave it out", output)
	}
}
