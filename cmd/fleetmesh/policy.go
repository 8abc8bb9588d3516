package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/fleetmesh/fleetmesh/hardening"
	"github.com/spf13/cobra"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "The fleet's security policy and every device's compliance"}
	cmd.AddCommand(newPolicySetCmd(), newPolicyShowCmd())
	return cmd
}

func newPolicySetCmd() *cobra.Command {
	var cf clientFlags
	var file string
	var applyRoles []string
	cmd := &cobra.Command{
		Use:   "set -f FILE [--apply-roles sensor,compute]",
		Short: "Make FILE the fleet's SecurityPolicy; every device checks itself against it, listed roles also apply it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f: required: the SecurityPolicy file")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("-f: %w", err)
			}
			if _, err := hardening.ParsePolicy(data); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.SetPolicy(cmd.Context(), data, applyRoles)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy set (spec version %d)\n", r.Index)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "SecurityPolicy YAML")
	cmd.Flags().StringSliceVar(&applyRoles, "apply-roles", nil, "roles whose devices apply the policy (others only check)")
	cf.register(cmd, true)
	return cmd
}

func newPolicyShowCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the fleet policy and each device's score and failing rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			st, err := c.Policy(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Policy %s (applied by: %s)\n\n", st.Name, dash(strings.Join(st.ApplyRoles, ", ")))
			tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tROLE\tSCORE\tCHECKED\tFAILING")
			for _, n := range st.Nodes {
				score := "-"
				if n.Reported {
					score = fmt.Sprintf("%.0f%%", n.Score)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Node, n.Role, score, ago(n.Checked), dash(strings.Join(n.Failing, ", ")))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	return cmd
}
