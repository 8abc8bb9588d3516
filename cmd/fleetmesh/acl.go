package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/spf13/cobra"
)

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "acl", Short: "Manage operator credentials"}
	tok := &cobra.Command{Use: "token", Short: "Operator credentials: admin may change the fleet, viewer may read"}
	tok.AddCommand(newACLCreateCmd(), newACLListCmd(), newACLRevokeCmd())
	cmd.AddCommand(tok)
	return cmd
}

func newACLCreateCmd() *cobra.Command {
	var cf clientFlags
	var req api.ACLTokenCreateRequest
	cmd := &cobra.Command{
		Use:   "create --role admin|viewer [--name NAME]",
		Short: "Create an operator credential; prints the credential alone on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role != "admin" && req.Role != "viewer" {
				return fmt.Errorf("--role: %q is not admin or viewer", req.Role)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.CreateACLToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.Credential)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Role, "role", "", "admin or viewer")
	cmd.Flags().StringVar(&req.Name, "name", "", "whose credential it is (shown in listings and the audit log)")
	cf.register(cmd, true)
	return cmd
}

func newACLListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List operator credentials (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.ACLTokens(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED\tSTATUS")
			for _, o := range list {
				status := "valid"
				if o.Revoked {
					status = "revoked"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.ID, o.Role, o.Name, o.Created.Local().Format(time.RFC3339), status)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	return cmd
}

func newACLRevokeCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an operator credential everywhere",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.RevokeACLToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "operator credential %s revoked (index %d)\n", args[0], r.Index)
			return nil
		},
	}
	cf.register(cmd, false)
	return cmd
}
