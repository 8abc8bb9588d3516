package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/fleetmesh/fleetmesh/node/provision"
	"github.com/spf13/cobra"
)

func newDiscoverCmd() *cobra.Command {
	var neighFile, knownFile, output string
	var fromFleet bool
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "List Raspberry Pis on the local network",
		Long: `Lists the Raspberry Pis in the kernel's neighbour table (/proc/net/arp, or
a file with that content or 'ip neigh' output) by their vendor MAC prefixes.
Devices whose MAC or IP is listed in --known (one per line) are marked as in
the fleet. Only hosts this machine has talked to recently are in the table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			neigh, err := provision.ReadNeighborFile(neighFile)
			if err != nil {
				return err
			}
			var knownList []string
			if knownFile != "" {
				b, err := os.ReadFile(knownFile)
				if err != nil {
					return err
				}
				knownList = strings.Split(string(b), "\n")
			}
			if fromFleet {
				ips, err := fleetIPs(cmd, &cf)
				if err != nil {
					return fmt.Errorf("--fleet: %w", err)
				}
				knownList = append(knownList, ips...)
			}
			var known *provision.Known
			if len(knownList) > 0 {
				if known, err = provision.NewKnown(knownList); err != nil {
					return err
				}
			}
			pis := provision.FindPis(neigh, known)
			w := cmd.OutOrStdout()
			if output == "json" {
				if pis == nil {
					pis = []provision.FoundPi{}
				}
				return printJSON(w, pis)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IP\tMAC\tVENDOR\tDEVICE\tSTATE\tIN FLEET")
			for _, p := range pis {
				in := "no"
				if p.InFleet {
					in = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.IP, p.MAC, p.Vendor, p.Device, p.State, in)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&neighFile, "neigh-file", "", "neighbour table to read (default /proc/net/arp)")
	cmd.Flags().StringVar(&knownFile, "known", "", "file of MAC or IP addresses already in the fleet, one per line")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&fromFleet, "fleet", false, "mark the Pis whose address a fleet member uses (asks the node at --addr)")
	cf.register(cmd, false)
	return cmd
}

// fleetIPs are the IP addresses the fleet's members use (API and gossip).
func fleetIPs(cmd *cobra.Command, cf *clientFlags) ([]string, error) {
	c, err := cf.client()
	if err != nil {
		return nil, err
	}
	nodes, _, err := c.Nodes(cmd.Context())
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, n := range nodes {
		for _, a := range []string{n.API, n.Gossip} {
			if host, _, err := net.SplitHostPort(a); err == nil {
				ips = append(ips, host)
			}
		}
	}
	return ips, nil
}
