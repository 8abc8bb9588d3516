package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv"
)

// BenchmarkAgentRSS measures what an idle agent costs in memory as a real
// process: it builds bin/fleetmesh, runs a fleet of 3 gateways and 2
// sensors on loopback (each its own process and data dir, joined with
// tokens from `fleetmesh token create`), waits until all are ready, lets
// them idle (FLEETMESH_BENCH_IDLE, default 30s) and reads each one's VmRSS.
// Goal: ≤ 25 MB for an edge, ≤ 40 MB for a gateway.
func BenchmarkAgentRSS(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "fleetmesh")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	idle := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("FLEETMESH_BENCH_IDLE")); err == nil {
		idle = d
	}

	type agent struct {
		name, role string
		cmd        *exec.Cmd
	}
	var agents []*agent
	defer func() {
		for _, a := range agents {
			a.cmd.Process.Signal(syscall.SIGINT)
		}
		for _, a := range agents {
			done := make(chan error, 1)
			go func() { done <- a.cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				a.cmd.Process.Kill()
				b.Errorf("%s did not stop within 10 s of SIGINT", a.name)
			}
		}
	}()
	apiRe := regexp.MustCompile(`API https://(\S+)`)
	start := func(name, role string, extra ...string) string {
		b.Helper()
		args := append([]string{"agent", "--name", name, "--role", role, "--data-dir", filepath.Join(dir, name),
			"--bind", "127.0.0.1:0", "--api", "127.0.0.1:0", "--raft", "127.0.0.1:0", "--log-level", "warn"}, extra...)
		cmd := exec.Command(bin, args...)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		agents = append(agents, &agent{name, role, cmd})
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}()
		deadline := time.After(time.Minute)
		for {
			select {
			case l := <-lines:
				if m := apiRe.FindStringSubmatch(l); m != nil {
					return m[1]
				}
			case <-deadline:
				b.Fatalf("%s: no 'API https://' line within a minute", name)
			}
		}
	}
	addr := start("gw1", "gateway", "--bootstrap")
	admin, err := os.ReadFile(filepath.Join(dir, "gw1", "operator.token"))
	if err != nil {
		b.Fatal(err)
	}
	ctl := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "FLEETMESH_ADDR="+addr, "FLEETMESH_TOKEN="+strings.TrimSpace(string(admin)),
			"FLEETMESH_CACERT="+filepath.Join(dir, "gw1", "ca.pem"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("fleetmesh %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(stdout.String()), nil
	}
	for _, a := range []struct{ name, role string }{{"gw2", "gateway"}, {"gw3", "gateway"}, {"s1", "sensor"}, {"s2", "sensor"}} {
		tok, err := ctl("token", "create", "--role", a.role)
		if err != nil {
			b.Fatal(err)
		}
		start(a.name, a.role, "--join", tok)
	}
	if err := testenv.Poll(2*time.Minute, func() error {
		out, err := ctl("nodes", "-o", "json")
		if err != nil {
			return err
		}
		var nodes []struct{ Name, State string }
		if err := json.Unmarshal([]byte(out), &nodes); err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if n.State == "ready" {
				ready++
			}
		}
		if ready != len(agents) {
			return fmt.Errorf("%d of %d agents ready", ready, len(agents))
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	<-time.After(idle) // the measurement is of an idle agent
	b.StopTimer()
	var gwMax, edgeMax float64
	for _, a := range agents {
		mb, err := vmRSS(a.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s (%s): VmRSS %.1f MB", a.name, a.role, mb)
		if a.role == "gateway" {
			gwMax = max(gwMax, mb)
		} else {
			edgeMax = max(edgeMax, mb)
		}
	}
	b.ReportMetric(gwMax, "gateway-MB")
	b.ReportMetric(edgeMax, "edge-MB")
}

// vmRSS reads a process's resident set size in MB (10^6 bytes).
func vmRSS(pid int) (float64, error) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return 0, err
			}
			return float64(kb) * 1024 / 1e6, nil
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}
