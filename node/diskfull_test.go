package node_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// A gateway whose data dir's disk fills up (an SD card full of logs, say)
// cannot store the Raft log: it says so, as state error with the reason,
// everywhere, instead of reporting ready while its spec falls behind; the
// fleet writes on without it; with space again it catches up and is ready.
func TestFullDiskIsReported(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Getenv("FLEETMESH_REQUIRE_MOUNT") != "" {
			t.Fatalf("mount a small tmpfs: %v: %s", err, out)
		}
		t.Skipf("mounting a small filesystem needs root with CAP_SYS_ADMIN: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Tune: func(c *node.Config) {
		if c.Name == "gw2" {
			c.DataDir = filepath.Join(mnt, "gw2")
		}
	}})
	ctx := context.Background()
	filler := filepath.Join(mnt, "filler")
	fill, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break // full
		}
	}
	fill.Close()

	gw2 := func(want string) func() error {
		return func() error {
			v, _, err := f.Client("gw1").Node(ctx, "gw2")
			if err != nil {
				return err
			}
			if v.State != want {
				return errors.New("gw1 sees gw2 " + v.State + " (" + v.Message + "), want " + want)
			}
			if want == "error" && (!strings.Contains(v.Message, "is full") || !strings.Contains(v.Message, "Raft log")) {
				return errors.New("gw2's message does not say its disk is full: " + v.Message)
			}
			return nil
		}
	}
	testenv.Eventually(t, 20*time.Second, gw2("error"))
	testenv.Eventually(t, 20*time.Second, func() error {
		fl, _, err := f.Client("gw3").Fleet(ctx)
		if err != nil {
			return err
		}
		if !strings.Contains(strings.Join(fl.Alerts, "\n"), "gw2 is in error: the disk of the data dir") {
			return errors.New("gw3's fleet alerts do not name gw2's full disk: " + strings.Join(fl.Alerts, "; "))
		}
		return nil
	})
	for range 20 {
		testenv.Eventually(t, 20*time.Second, func() error {
			_, err := f.Client(f.Leader()).CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
			return err
		})
	}

	os.Remove(filler)
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := gw2("ready")(); err != nil {
			return err
		}
		if a, b := f.Member("gw1").Node.Store().Version(), f.Member("gw2").Node.Store().Version(); a != b {
			return errors.New("gw2 has not caught up")
		}
		return nil
	})
}
