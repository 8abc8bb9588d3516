package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newTokenRevokeCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token (devices that joined with it stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "join token %s revoked (index %d)\n", args[0], r.Index)
			return nil
		},
	}
	cf.register(cmd, false)
	return cmd
}
