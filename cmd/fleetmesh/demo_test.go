package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv"
)

// The demo starts a whole fleet, prints a ready-to-paste status line that
// works, and stops cleanly when told to.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuf
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"demo", "--dir", dir, "--api-port", "0"})
		root.SetOut(&out)
		root.SetErr(&errb)
		done <- root.ExecuteContext(ctx)
	}()
	exportRE := regexp.MustCompile(`export FLEETMESH_ADDR=(\S+) FLEETMESH_TOKEN=(\S+) FLEETMESH_CACERT=(\S+)`)
	var m []string
	testenv.Eventually(t, 60*time.Second, func() error {
		if m = exportRE.FindStringSubmatch(out.String()); m == nil {
			return errorString("demo has not printed its export line yet: " + out.String() + errb.String())
		}
		return nil
	})
	t.Setenv("FLEETMESH_ADDR", m[1])
	t.Setenv("FLEETMESH_TOKEN", m[2])
	t.Setenv("FLEETMESH_CACERT", m[3])
	testenv.Eventually(t, 30*time.Second, func() error {
		stdout, stderr, code := cli(t, "status")
		if code != 0 || !strings.Contains(stdout, "9 total, 9 online") || !strings.Contains(stdout, "gateway 3") {
			return errorString("status: " + stdout + stderr)
		}
		if !strings.Contains(stdout, "plant-a 5, plant-b 4") {
			return errorString("sites: " + stdout)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop")
	}
	if !strings.Contains(out.String(), "Stopping the demo fleet") {
		t.Errorf("demo output: %s", out.String())
	}
}
