package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/spf13/cobra"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens"}
	cmd.AddCommand(newTokenCreateCmd(), newTokenListCmd(), newTokenRevokeCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var cf clientFlags
	var req api.TokenCreateRequest
	cmd := &cobra.Command{
		Use:   "create --role ROLE [--ttl 24h] [--uses N]",
		Short: "Create a join token; prints the token alone on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Role == "" {
				return fmt.Errorf("--role: required (gateway, sensor, compute, storage or hybrid)")
			}
			if req.Uses < 0 {
				return fmt.Errorf("--uses: %d is negative; 0 means unlimited", req.Uses)
			}
			if _, err := time.ParseDuration(req.TTL); err != nil {
				return fmt.Errorf("--ttl: %q is not a duration like 24h", req.TTL)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Role, "role", "", "role of the devices that may join with it")
	cmd.Flags().StringVar(&req.TTL, "ttl", "24h", "how long the token is valid")
	cmd.Flags().IntVar(&req.Uses, "uses", 0, "how many devices may join with it (0: unlimited)")
	cf.register(cmd, true)
	return cmd
}

func newTokenListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			toks, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), toks)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tEXPIRES\tUSED\tUSES LEFT\tSTATUS")
			for _, t := range toks {
				left := "unlimited"
				if t.UsesLeft >= 0 {
					left = fmt.Sprint(t.UsesLeft)
				}
				status := "valid"
				switch {
				case t.Revoked:
					status = "revoked"
				case t.Expired:
					status = "expired"
				case t.UsesLeft == 0:
					status = "used up"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Role, t.Expires.Local().Format(time.RFC3339), t.Used, left, status)
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	return cmd
}
