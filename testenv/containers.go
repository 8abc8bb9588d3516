package testenv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv/image"
)

// AgentImage is the project's own image for multi-host tests: the
// fleetmesh binary alone, FROM scratch, built here (there is no registry).
const AgentImage = "fleetmesh-test/fleetmesh:dev"

var (
	agentImageOnce sync.Once
	agentImageErr  error
)

// BuildAgentImage builds AgentImage from this source tree, once per process.
func BuildAgentImage() error {
	agentImageOnce.Do(func() {
		cli, err := Docker()
		if err != nil {
			agentImageErr = err
			return
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		agentImageErr = image.BuildGo(ctx, cli, "github.com/fleetmesh/fleetmesh/cmd/fleetmesh", 7400, AgentImage)
	})
	return agentImageErr
}

// ContainerFleet runs fleetmesh agents as separate processes, one per
// Docker container of AgentImage, on a private network of their own: real
// processes with their own addresses, on a real (bridged) network, started
// with the binary's own command line and defaults, killed with SIGKILL and
// restarted from their data dirs (host directories bind-mounted at /data).
// The test process reaches each agent's API at its container address.
type ContainerFleet struct {
	t      testing.TB
	cli    *client.Client
	net    string // network ID
	subnet string // "10.213.N." of a /24
	base   string
	mu     sync.Mutex
	nodes  map[string]*ContainerNode
	nextIP int
	// Admin and CA are the operator credential and the fleet CA certificate
	// (LoadCredentials).
	Admin string
	CA    []byte
}

// ContainerNode is one agent's container.
type ContainerNode struct {
	Name, IP, ID string
	// DataDir is the host directory mounted at /data.
	DataDir string
}

// NewContainerFleet makes the fleet's network. It builds AgentImage first if
// needed; without a Docker engine it returns the error.
func NewContainerFleet(t testing.TB) (*ContainerFleet, error) {
	t.Helper()
	if err := BuildAgentImage(); err != nil {
		return nil, err
	}
	cli, err := Docker()
	if err != nil {
		return nil, err
	}
	f := &ContainerFleet{t: t, cli: cli, base: t.TempDir(), nodes: map[string]*ContainerNode{}, nextIP: 10}
	t.Cleanup(f.close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	removeStale(ctx, cli)
	name := "fmtest-" + randHex(4)
	// A /24 no other network of the engine uses: try a few.
	for range 8 {
		f.subnet = fmt.Sprintf("10.213.%d.", rand.IntN(250)+1)
		resp, err := cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: map[string]string{"fleetmesh-test": "multihost"},
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: f.subnet + "0/24", Gateway: f.subnet + "1"}}}})
		if err == nil {
			f.net = resp.ID
			return f, nil
		}
		if !strings.Contains(err.Error(), "overlap") {
			return nil, fmt.Errorf("docker network: %w", err)
		}
	}
	return nil, fmt.Errorf("docker network: no free 10.213.x.0/24")
}

// Start runs a new agent container: `fleetmesh agent --data-dir /data
// --name NAME ARGS...`, at the next address of the network.
func (f *ContainerFleet) Start(name string, args ...string) *ContainerNode {
	f.t.Helper()
	return f.StartWith(name, nil, args...)
}

// StartWith is Start with files (by name) put in the data dir first, such
// as a config file for --config /data/NAME.
func (f *ContainerFleet) StartWith(name string, files map[string][]byte, args ...string) *ContainerNode {
	f.t.Helper()
	f.mu.Lock()
	ip := fmt.Sprintf("%s%d", f.subnet, f.nextIP)
	f.nextIP++
	f.mu.Unlock()
	n := &ContainerNode{Name: name, IP: ip, DataDir: filepath.Join(f.base, name)}
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	for file, data := range files {
		if err := os.WriteFile(filepath.Join(n.DataDir, file), data, 0o600); err != nil {
			f.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := append([]string{"agent", "--data-dir", "/data", "--name", name}, args...)
	resp, err := f.cli.ContainerCreate(ctx,
		// As the test's own user, so that it can read (and remove) what
		// the agent writes in the mounted data dir.
		&container.Config{Image: AgentImage, Cmd: cmd, Hostname: name, User: fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
			Labels: map[string]string{"fleetmesh-test": "multihost"}},
		&container.HostConfig{Binds: []string{n.DataDir + ":/data"}},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			f.net: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}},
		}}, nil, "fmtest-"+randHex(4)+"-"+name)
	if err != nil {
		f.t.Fatalf("create container %s: %v", name, err)
	}
	n.ID = resp.ID
	f.mu.Lock()
	f.nodes[name] = n
	f.mu.Unlock()
	if err := f.cli.ContainerStart(ctx, n.ID, container.StartOptions{}); err != nil {
		f.t.Fatalf("start container %s: %v", name, err)
	}
	return n
}

// Node returns an agent's container by name.
func (f *ContainerFleet) Node(name string) *ContainerNode {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		f.t.Fatalf("no container node %q", name)
	}
	return n
}

// Names lists the agents started, in no order.
func (f *ContainerFleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.nodes {
		out = append(out, n)
	}
	return out
}

// Kill sends the agent SIGKILL, as a power cut would.
func (f *ContainerFleet) Kill(name string) {
	f.t.Helper()
	if err := f.cli.ContainerKill(context.Background(), f.Node(name).ID, "KILL"); err != nil {
		f.t.Fatalf("kill %s: %v", name, err)
	}
	Eventually(f.t, 30*time.Second, func() error {
		st, err := f.cli.ContainerInspect(context.Background(), f.Node(name).ID)
		if err != nil {
			return err
		}
		if st.State.Running {
			return fmt.Errorf("%s still running", name)
		}
		return nil
	})
}

// Restart starts a killed agent's container again: the same command line,
// address and data dir.
func (f *ContainerFleet) Restart(name string) {
	f.t.Helper()
	if err := f.cli.ContainerStart(context.Background(), f.Node(name).ID, container.StartOptions{}); err != nil {
		f.t.Fatalf("restart %s: %v", name, err)
	}
}

// Disconnect cuts an agent's container off the network (it keeps running,
// alone); Reconnect puts it back at the same address.
func (f *ContainerFleet) Disconnect(name string) {
	f.t.Helper()
	if err := f.cli.NetworkDisconnect(context.Background(), f.net, f.Node(name).ID, true); err != nil {
		f.t.Fatalf("disconnect %s: %v", name, err)
	}
}

// Reconnect undoes Disconnect.
func (f *ContainerFleet) Reconnect(name string) {
	f.t.Helper()
	n := f.Node(name)
	if err := f.cli.NetworkConnect(context.Background(), f.net, n.ID, &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: n.IP}}); err != nil {
		f.t.Fatalf("reconnect %s: %v", name, err)
	}
}

// Loss drops pct percent of the packets an agent sends, at random, as a
// lossy site link would (pct 0: none). It is an nftables rule in the
// container's network namespace, set from the host (the image has no
// tools; this machine's kernel has no netem). A restarted container
// starts with no loss.
func (f *ContainerFleet) Loss(name string, pct int) error {
	script := "table inet fmloss\ndelete table inet fmloss\n"
	if pct > 0 {
		script += fmt.Sprintf("table inet fmloss { chain out { type filter hook output priority 0; numgen random mod 100 < %d drop; }; }\n", pct)
	}
	return f.inNetns(name, script, "nft", "-f", "-")
}

// Rate limits what an agent sends to kbit kilobits a second with a token
// bucket (tc tbf; 0: no limit), as a slow site link would: a burst queues,
// up to half a second, then drops.
func (f *ContainerFleet) Rate(name string, kbit int) error {
	if kbit <= 0 {
		return f.inNetns(name, "", "tc", "qdisc", "replace", "dev", "eth0", "root", "pfifo_fast")
	}
	return f.inNetns(name, "", "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
		"rate", fmt.Sprintf("%dkbit", kbit), "burst", "16kbit", "latency", "500ms")
}

// inNetns runs a host command in an agent container's network namespace.
func (f *ContainerFleet) inNetns(name, stdin string, cmd ...string) error {
	st, err := f.cli.ContainerInspect(context.Background(), f.Node(name).ID)
	if err != nil {
		return err
	}
	if st.State == nil || st.State.Pid == 0 {
		return fmt.Errorf("%s is not running", name)
	}
	c := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(st.State.Pid), "-n"}, cmd...)...)
	c.Stdin = strings.NewReader(stdin)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s on %s: %v: %s", cmd[0], name, err, out)
	}
	return nil
}

// API is an agent's API address as the test process reaches it.
func (f *ContainerFleet) API(name string) string { return f.Node(name).IP + ":7400" }

// LoadCredentials waits for the bootstrap agent's operator credential and
// CA certificate in its data dir, and keeps them for Client.
func (f *ContainerFleet) LoadCredentials(bootstrap string) {
	f.t.Helper()
	dir := f.Node(bootstrap).DataDir
	Eventually(f.t, 60*time.Second, func() error {
		tok, err := os.ReadFile(filepath.Join(dir, "operator.token"))
		if err != nil {
			return err
		}
		ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			return err
		}
		f.Admin, f.CA = strings.TrimSpace(string(tok)), ca
		return nil
	})
}

// Client is an operator's API client for an agent.
func (f *ContainerFleet) Client(name string) *api.Client {
	f.t.Helper()
	c, err := api.NewClient(f.API(name), f.Admin, f.CA)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// Logs returns an agent's output so far (stdout and stderr).
func (f *ContainerFleet) Logs(name string) string {
	rc, err := f.cli.ContainerLogs(context.Background(), f.Node(name).ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var b bytes.Buffer
	stdcopy.StdCopy(&b, &b, rc)
	return b.String()
}

func (f *ContainerFleet) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range f.Names() {
		if f.t.Failed() {
			f.t.Logf("--- %s's output:\n%s", name, f.Logs(name))
		}
		if err := f.cli.ContainerRemove(ctx, f.Node(name).ID, container.RemoveOptions{Force: true}); err != nil {
			f.t.Logf("remove container %s: %v", name, err)
		}
	}
	if f.net != "" {
		if err := f.cli.NetworkRemove(ctx, f.net); err != nil {
			f.t.Logf("remove network: %v", err)
		}
	}
	f.cli.Close()
}

// removeStale removes what earlier multi-host tests left behind when their
// process was killed before its cleanups ran: containers and networks of
// this label older than an hour (no test runs that long).
func removeStale(ctx context.Context, cli *client.Client) {
	label := filters.NewArgs(filters.Arg("label", "fleetmesh-test=multihost"))
	old := time.Now().Add(-time.Hour)
	if list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: label}); err == nil {
		for _, c := range list {
			if time.Unix(c.Created, 0).Before(old) {
				cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
		}
	}
	if nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: label}); err == nil {
		for _, n := range nets {
			if n.Created.Before(old) {
				cli.NetworkRemove(ctx, n.ID)
			}
		}
	}
}
