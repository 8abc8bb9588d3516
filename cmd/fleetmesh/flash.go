package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fleetmesh/fleetmesh/node/provision"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func newFlashCmd() *cobra.Command {
	var (
		force  bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "flash IMAGE DEVICE",
		Short: "Write an image to an SD card and verify it",
		Long: `Writes IMAGE (.img or .img.xz) to DEVICE with a progress bar, syncs, reads
it back and compares SHA-256 checksums. DEVICE must be a whole removable disk
(a card reader) with nothing mounted from it; --force allows a disk that is
not marked removable, never a mounted one. A regular file is also accepted.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validOutput(output); err != nil {
				return err
			}
			image, device := args[0], args[1]
			size := int64(-1) // unknown for xz: a spinner
			if st, err := os.Stat(image); err == nil && !strings.HasSuffix(image, ".xz") {
				size = st.Size()
			}
			bar := progressbar.NewOptions64(size,
				progressbar.OptionSetWriter(cmd.ErrOrStderr()),
				progressbar.OptionSetDescription("writing "+device),
				progressbar.OptionShowBytes(true),
				progressbar.OptionThrottle(200*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(cmd.ErrOrStderr()) }),
			)
			fl := &provision.Flasher{Force: force, Progress: bar}
			// Ctrl-C stops the write between chunks; the card is then incomplete.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := fl.Flash(ctx, image, device)
			_ = bar.Finish()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(w, map[string]any{"device": device, "bytes": res.Bytes, "sha256": res.SHA256, "verified": true})
			}
			fmt.Fprintf(w, "%s: wrote and verified %d bytes, sha256 %s\n", device, res.Bytes, res.SHA256)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "write to a disk that is not marked removable")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
