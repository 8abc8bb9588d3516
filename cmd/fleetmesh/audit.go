package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newAuditCmd() *cobra.Command {
	var cf clientFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--limit N]",
		Short: "Show the audit log: every write, who made it, from where, and how it ended (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit: %d is not from 1 to 1000", limit)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			log, err := c.Audit(cmd.Context(), limit)
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), log)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tINDEX\tOPERATOR\tFROM\tREQUEST\tRESULT\tSUMMARY")
			for _, e := range log {
				who := e.OperatorID
				if e.OperatorName != "" {
					who += " (" + e.OperatorName + ")"
				}
				res := e.Result
				if e.Error != "" {
					res += ": " + e.Error
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s %s\t%s\t%s\n", e.Time.Local().Format(time.RFC3339), e.Index, who, e.Remote, e.Method, e.Path, res, e.Summary)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "how many of the latest entries to show (at most 1000)")
	cf.register(cmd, true)
	return cmd
}
