package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the CLI with args and returns the process exit status.
func run(args []string) int {
	return runWith(args, os.Stdout, os.Stderr)
}

func runWith(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "Error:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "Error:", err)
	return 1
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "fleetmesh",
		Short:         "A fleet manager for edge devices with no central server",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newAgentCmd(),
		newDemoCmd(),
		newStatusCmd(),
		newNodesCmd(),
		newTokenCmd(),
		newAppsCmd(),
		newHardenCmd(),
		newPolicyCmd(),
		newProvisionCmd(),
		newImageCmd(),
		newFlashCmd(),
		newDiscoverCmd(),
		newACLCmd(),
		newAuditCmd(),
		newKeysCmd(),
		newNodeCmd(),
	)
	return root
}
