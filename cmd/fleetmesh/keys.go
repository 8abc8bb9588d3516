package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "The gossip encryption keys (shown by fingerprint only)"}
	cmd.AddCommand(newKeysListCmd(), newKeysRotateCmd())
	return cmd
}

func newKeysListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the gossip keys by fingerprint, which one encrypts, and how many nodes hold each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			ks, err := c.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), ks)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "FINGERPRINT\tPRIMARY\tNODES HOLDING\tNODES USING")
			for _, k := range ks.Keys {
				prim := ""
				switch {
				case k.Primary:
					prim = "yes"
				case k.Target:
					prim = "next"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", k.Fingerprint, prim, k.Nodes, k.Using)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if ks.Rotating {
				fmt.Fprintf(cmd.OutOrStdout(), "rotation in progress; waiting for: %s\n", strings.Join(ks.Lagging, ", "))
			}
			return nil
		},
	}
	cf.register(cmd, true)
	return cmd
}

func newKeysRotateCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the gossip key fleet-wide without downtime (see keys list for progress)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.RotateKeys(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gossip key rotation started (index %d); every node installs the new key, then switches to it, then drops the old one\n", r.Index)
			return nil
		},
	}
	cf.register(cmd, false)
	return cmd
}
