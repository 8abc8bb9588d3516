package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/fleetmesh/fleetmesh/hardening"
	"github.com/spf13/cobra"
)

func newHardenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "harden",
		Short: "Check or apply the OS security policy on this device",
		Long: `Check or apply a SecurityPolicy (apiVersion fleetmesh.io/v1) on this device.

With --root DIR the commands work on the system image below DIR and change
only files there; the running system (sysctl, services, nftables, sshd,
fail2ban, auditd) is touched only when the root is /.`,
	}
	cmd.AddCommand(newHardenCheckCmd(), newHardenApplyCmd(), newHardenUndoCmd())
	return cmd
}

// hardenFlags are the flags the harden subcommands share.
type hardenFlags struct {
	policy string
	root   string
	output string
}

func (f *hardenFlags) register(cmd *cobra.Command, withPolicy bool) {
	if withPolicy {
		cmd.Flags().StringVar(&f.policy, "policy", "", "SecurityPolicy YAML file (required)")
		_ = cmd.MarkFlagRequired("policy")
	}
	cmd.Flags().StringVar(&f.root, "root", "/", "root directory of the system to harden")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
}

func (f *hardenFlags) validate() error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("unknown output format %q: use table or json", f.output)
	}
	if f.root == "" {
		return errors.New("--root must not be empty")
	}
	return nil
}

func (f *hardenFlags) load() (*hardening.Policy, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	return hardening.LoadPolicy(f.policy)
}

func newHardenCheckCmd() *cobra.Command {
	var f hardenFlags
	cmd := &cobra.Command{
		Use:   "check --policy FILE [--root DIR] [-o json]",
		Short: "Report how the system matches the policy (changes nothing)",
		Long: `Report one result per rule of the policy (pass, fail or not-applicable) with
its evidence, and a score: the percentage of applicable rules that pass.
The exit status is 2 when any rule fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := f.load()
			if err != nil {
				return err
			}
			rep, err := hardening.Check(cmd.Context(), p, f.root, hardening.Options{})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				printReport(out, rep)
			}
			return failedError(rep)
		},
	}
	f.register(cmd, true)
	return cmd
}

func newHardenApplyCmd() *cobra.Command {
	var f hardenFlags
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply --policy FILE [--root DIR] [--dry-run]",
		Short: "Make the system match the policy (idempotent; undo restores)",
		Long: `Make the system match the policy. Every file is backed up before it is
changed, and "fleetmesh harden undo" restores the state before the last apply.
A second apply changes nothing. The exit status is 2 when rules still fail
afterwards (for example, a package the policy needs is not installed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := f.load()
			if err != nil {
				return err
			}
			res, err := hardening.Apply(cmd.Context(), p, f.root, dryRun, hardening.Options{})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				printApply(out, res)
			}
			if dryRun {
				return nil
			}
			return failedError(res.Report)
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report what would change")
	return cmd
}

func newHardenUndoCmd() *cobra.Command {
	var f hardenFlags
	cmd := &cobra.Command{
		Use:   "undo [--root DIR]",
		Short: "Restore the files changed by the last apply",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(); err != nil {
				return err
			}
			res, err := hardening.Undo(cmd.Context(), f.root, hardening.Options{})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				return printJSON(out, res)
			}
			fmt.Fprintf(out, "restored from %s\n", res.Backup)
			for _, p := range res.Restored {
				fmt.Fprintf(out, "  restored %s\n", p)
			}
			for _, p := range res.Removed {
				fmt.Fprintf(out, "  removed  %s\n", p)
			}
			for _, l := range res.Live {
				fmt.Fprintf(out, "  ran      %s\n", l)
			}
			return nil
		},
	}
	f.register(cmd, false)
	return cmd
}

// failedError turns failing rules into exit status 2.
func failedError(rep *hardening.Report) error {
	if rep == nil || rep.Compliant() {
		return nil
	}
	return &exitError{code: 2, err: fmt.Errorf("policy %s: %d of %d applicable rules fail: %s",
		rep.Policy, rep.Failed, rep.Passed+rep.Failed, strings.Join(rep.Failing(), ", "))}
}

func printReport(w io.Writer, rep *hardening.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tSTATUS\tEVIDENCE")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Rule, r.Status, r.Evidence)
	}
	tw.Flush()
	fmt.Fprintf(w, "\npolicy %s on %s: score %.1f%% (%d pass, %d fail, %d not applicable)\n",
		rep.Policy, rep.Root, rep.Score, rep.Passed, rep.Failed, rep.NotApplicable)
}

func printApply(w io.Writer, res *hardening.ApplyResult) {
	verb := "changed"
	if res.DryRun {
		verb = "would change"
	}
	if len(res.Changes) == 0 {
		fmt.Fprintln(w, "nothing to change: the files already match the policy")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "ACTION\tPATH\tWHY\n")
		for _, c := range res.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Action, c.Path, c.Reason)
		}
		tw.Flush()
		fmt.Fprintf(w, "%s %d files\n", verb, len(res.Changes))
	}
	if res.Backup != "" {
		fmt.Fprintf(w, "backup in %s (fleetmesh harden undo restores it)\n", res.Backup)
	}
	for _, l := range res.Live {
		fmt.Fprintf(w, "running system: %s\n", l)
	}
	for _, u := range res.Unresolved {
		fmt.Fprintf(w, "cannot fix: %s\n", u)
	}
	if r := res.Report; r != nil {
		fmt.Fprintf(w, "score %.1f%% (%d pass, %d fail, %d not applicable)\n", r.Score, r.Passed, r.Failed, r.NotApplicable)
	}
}
