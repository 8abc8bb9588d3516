package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Act on one device"}
	cmd.AddCommand(newEvictCmd())
	return cmd
}

func newEvictCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "evict NAME",
		Short: "Remove a device: revoke its certificate fleet-wide, take its Raft seat, rotate the gossip key past it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.Evict(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s evicted (index %d); it needs a new token and a new name to join again\n", args[0], r.Index)
			return nil
		},
	}
	cf.register(cmd, false)
	return cmd
}
