package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the fleet summary as the nearest node sees it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			f, meta, err := c.Fleet(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cf.json() {
				return printJSON(out, f)
			}
			leader := f.Leader
			if leader == "" {
				leader = "none known"
			}
			fmt.Fprintf(out, "Fleet %s, answered by %s\n", f.ClusterID, f.AnsweredBy)
			fmt.Fprintf(out, "Spec version %d, leader %s, last contact %s ago\n", f.SpecVersion, leader, meta.LastContact.Round(time.Millisecond))
			fmt.Fprintf(out, "Nodes: %d total, %d online, %d offline\n", f.Total, f.Online, f.Offline)
			fmt.Fprintf(out, "Applications: %d\n", f.Applications)
			tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', 0)
			fmt.Fprintf(tw, "By state:\t%s\n", counts(f.ByState))
			fmt.Fprintf(tw, "By role:\t%s\n", counts(f.ByRole))
			fmt.Fprintf(tw, "By site:\t%s\n", counts(f.BySite))
			tw.Flush()
			if len(f.NonCompliant) > 0 {
				fmt.Fprintf(out, "Not compliant with the security policy: %s\n", strings.Join(f.NonCompliant, ", "))
			}
			if len(f.Alerts) == 0 {
				fmt.Fprintln(out, "Alerts: none")
			} else {
				fmt.Fprintln(out, "Alerts:")
				for _, a := range f.Alerts {
					fmt.Fprintln(out, "  -", a)
				}
			}
			return nil
		},
	}
	cf.register(cmd, true)
	return cmd
}

// counts renders a map as "a 1, b 2", leaving out zeros.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
