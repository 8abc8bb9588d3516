package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/spf13/cobra"
)

func newNodesCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the fleet's devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			nodes, _, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), nodes)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tSITE\tSTATE\tCPU%\tMEM%\tDISK%\tTEMP\tSPEC\tLAST SEEN\tVERSION")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.1f\t%s\t%d\t%s\t%s\n", n.Name, n.Role, dash(n.Site), n.State,
					n.Health.CPUPercent, n.Health.MemPercent, n.Health.DiskPercent, temp(n.Health.TempC), n.SpecVersion, ago(n.LastSeen), dash(n.Version))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd, true)
	cmd.AddCommand(newNodesShowCmd())
	return cmd
}

func newNodesShowCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one device in full",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			n, _, err := c.Node(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json() {
				return printJSON(cmd.OutOrStdout(), n)
			}
			printNode(cmd, n)
			return nil
		},
	}
	cf.register(cmd, true)
	return cmd
}

func printNode(cmd *cobra.Command, n *api.Node) {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", n.Name)
	row("Role", n.Role)
	row("Site", dash(n.Site))
	var labels []string
	for k, v := range n.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	row("Labels", dash(strings.Join(labels, ", ")))
	st := n.State
	if n.OfflineReason != "" {
		st += " (" + n.OfflineReason + ")"
	}
	row("State", st)
	if n.Message != "" {
		row("Message", n.Message)
	}
	row("API", dash(n.API))
	row("Last seen", ago(n.LastSeen))
	row("Spec version", fmt.Sprint(n.SpecVersion))
	row("Version", dash(n.Version))
	if n.Voter != nil {
		row("Raft voter", fmt.Sprint(*n.Voter))
	}
	row("CPU", fmt.Sprintf("%.1f%%", n.Health.CPUPercent))
	row("Memory", fmt.Sprintf("%.1f%%", n.Health.MemPercent))
	row("Disk", fmt.Sprintf("%.1f%%", n.Health.DiskPercent))
	row("Temperature", temp(n.Health.TempC))
	row("Load (1m)", fmt.Sprintf("%.2f", n.Health.Load1))
	row("Host uptime", (time.Duration(n.Health.UptimeSec) * time.Second).String())
	for _, a := range n.Apps {
		row("App "+a.Name, fmt.Sprintf("%s %s %s", a.Version, a.Status, a.Message))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func temp(t *float64) string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f°C", *t)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	if d < time.Second {
		return "now"
	}
	return d.Round(time.Second).String() + " ago"
}
