package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fleetmesh/fleetmesh/node/provision"
	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	var (
		in, out, file, binary, device, output string
		tok                                   tokenFlags
	)
	cmd := &cobra.Command{
		Use:   "image --in IMAGE --out IMAGE -f PROFILE --token TOKEN [--binary PATH]",
		Short: "Write a device's seed and the fleetmesh binary into a Raspberry Pi image",
		Long: `Copies an Ubuntu Server preinstalled Raspberry Pi image (.img or .img.xz)
to --out, keeping it sparse and never holding it in memory, then writes
user-data, meta-data, network-config and the fleetmesh binary into its FAT32
boot partition (labeled system-boot, or else the first FAT32 partition).
No root, loop device or mount is needed, and no other partition changes.

The binary must be built for the device (linux/arm64 for every supported
model); by default it is this executable, so from a laptop pass --binary with
an arm64 build. The output image holds the join token and is mode 0600.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			if in == "" || out == "" || file == "" {
				return errors.New("--in IMAGE, --out IMAGE and -f PROFILE are required")
			}
			t, err := tok.parse()
			if err != nil {
				return err
			}
			fl, err := provision.LoadFile(file)
			if err != nil {
				return err
			}
			p, err := pickDevice(fl, device)
			if err != nil {
				return err
			}
			if binary == "" {
				if binary, err = os.Executable(); err != nil {
					return fmt.Errorf("find this executable: %w (pass --binary)", err)
				}
			}
			seed, err := provision.GenerateSeed(p, t)
			if err != nil {
				return err
			}
			// On Ctrl-C the copy stops and its temporary output is removed.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := provision.BuildImage(ctx, provision.ImageOptions{
				In: in, Out: out, Seed: seed, Binary: binary, GOARCH: p.GOARCH(),
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(w, map[string]any{
					"image": out, "hostname": p.Hostname, "partition": res.Partition,
					"label": res.Label, "files": res.Files, "bytes": res.Size, "token": t.Redacted(),
				})
			}
			fmt.Fprintf(w, "%s: %s for %s (%s, %s) in partition %d (%s); token %s\n",
				out, strings.Join(res.Files, ", "), p.Hostname, p.Model, p.GOARCH(), res.Partition, res.Label, t.Redacted())
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "input image (.img or .img.xz)")
	cmd.Flags().StringVar(&out, "out", "", "output image")
	cmd.Flags().StringVarP(&file, "file", "f", "", "device profile, or fleet file with --device")
	cmd.Flags().StringVar(&binary, "binary", "", "fleetmesh binary built for the device (default: this executable)")
	cmd.Flags().StringVar(&device, "device", "", "id or hostname of the device when -f is a fleet file")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	tok.register(cmd)
	return cmd
}

// pickDevice returns the one device an image is for.
func pickDevice(fl *provision.Fleet, sel string) (*provision.Profile, error) {
	if sel == "" {
		if len(fl.Devices) != 1 {
			return nil, fmt.Errorf("the fleet file has %d devices: pick one with --device ID", len(fl.Devices))
		}
		return &fl.Devices[0], nil
	}
	for i := range fl.Devices {
		if p := &fl.Devices[i]; p.ID == sel || p.Hostname == sel {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no device %q in the fleet file", sel)
}
