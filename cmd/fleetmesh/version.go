package main

import (
	"fmt"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the fleetmesh version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "fleetmesh", node.Version)
			return nil
		},
	}
}
