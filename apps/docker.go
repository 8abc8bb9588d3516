package apps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/go-connections/nat"
)

// Labels that mark what fleetmesh owns on a Docker engine. A container
// without LabelManaged=true and this node's LabelNode is never listed,
// stopped or removed.
const (
	LabelManaged  = "io.fleetmesh.managed"
	LabelNode     = "io.fleetmesh.node"
	LabelApp      = "io.fleetmesh.app"
	LabelVersion  = "io.fleetmesh.version"
	LabelSpecHash = "io.fleetmesh.spec-hash"
)

// DockerConfig configures a DockerDriver.
type DockerConfig struct {
	// Client talks to the engine; nil means one from the environment
	// (DOCKER_HOST etc.) with API version negotiation.
	Client client.APIClient
	// Node is this device's name. It is written to every container's
	// LabelNode, and the driver sees only containers carrying it, so nodes
	// sharing an engine (tests, demo) never touch each other's containers.
	Node string
	// NamePrefix is prepended to container names ("fleetmesh-<app>") so
	// nodes sharing an engine do not collide; empty on a real device.
	NamePrefix string
	// PullTimeout bounds an image pull; when it passes, a local copy of
	// the image is used if there is one. Default 30 s.
	PullTimeout time.Duration
	// StopTimeout is how long a container gets to stop before it is
	// killed when replaced or removed. Default 10 s.
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// DockerDriver runs TypeContainer applications on the Docker engine.
type DockerDriver struct {
	cli  client.APIClient
	cfg  DockerConfig
	log  *slog.Logger
	owns bool // cli was made here and is closed by Close
}

var _ interface {
	Driver
	Prober
} = (*DockerDriver)(nil)

// NewDockerDriver returns a driver for the engine in cfg.
func NewDockerDriver(cfg DockerConfig) (*DockerDriver, error) {
	if cfg.Node == "" {
		return nil, errors.New("docker driver: Node is required")
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	d := &DockerDriver{cli: cfg.Client, cfg: cfg, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("component", "apps.docker")
	if d.cli == nil {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker driver: %w", err)
		}
		d.cli, d.owns = cli, true
	}
	return d, nil
}

// Close releases the client if the driver made it.
func (d *DockerDriver) Close() error {
	if d.owns {
		return d.cli.Close()
	}
	return nil
}

// ContainerName is the name of app's container on this node.
func (d *DockerDriver) ContainerName(app string) string {
	return d.cfg.NamePrefix + "fleetmesh-" + app
}

func (d *DockerDriver) ownedFilter() filters.Args {
	return filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelNode+"="+d.cfg.Node),
	)
}

// owned lists this node's containers, all of them or app's only.
func (d *DockerDriver) owned(ctx context.Context, app string) ([]container.Summary, error) {
	f := d.ownedFilter()
	if app != "" {
		f.Add("label", LabelApp+"="+app)
	}
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return cs, nil
}

// Ensure implements Driver.
func (d *DockerDriver) Ensure(ctx context.Context, inst Instance, progress func(Status)) (Status, error) {
	if progress == nil {
		progress = func(Status) {}
	}
	fail := func(err error) (Status, error) {
		return Status{State: StateFailed, Message: err.Error()}, err
	}
	if inst.Type != TypeContainer {
		return fail(fmt.Errorf("docker driver: type %s: %w", inst.Type, ErrUnsupported))
	}
	cs, err := d.owned(ctx, inst.App)
	if err != nil {
		return fail(err)
	}
	var current *container.Summary
	pulled := false
	for i := range cs {
		c := &cs[i]
		if current == nil && c.Labels[LabelSpecHash] == inst.Hash {
			current = c
			continue
		}
		// An older spec, or a duplicate left by an interrupted replace.
		// Pull first so that a missing image does not take down the
		// running version.
		if current == nil && !pulled {
			progress(Status{State: StatePulling, Message: inst.Image})
			if err := d.ensureImage(ctx, inst.Image, inst.PullPolicy); err != nil {
				return fail(err)
			}
			pulled = true
		}
		d.log.Info("removing container", "app", inst.App, "container", c.ID[:12], "version", c.Labels[LabelVersion], "reason", "spec changed")
		if err := d.removeContainer(ctx, c.ID); err != nil {
			return fail(err)
		}
	}
	if current != nil {
		return d.converge(ctx, inst, current.ID)
	}
	if !pulled {
		progress(Status{State: StatePulling, Message: inst.Image})
		if err := d.ensureImage(ctx, inst.Image, inst.PullPolicy); err != nil {
			return fail(err)
		}
	}
	id, err := d.create(ctx, inst)
	if err != nil {
		return fail(err)
	}
	progress(Status{State: StateStarting})
	d.log.Info("starting container", "app", inst.App, "version", inst.Version, "container", id[:12])
	if err := d.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fail(fmt.Errorf("start %s: %w", d.ContainerName(inst.App), err))
	}
	return d.statusOf(ctx, id)
}

// converge handles a container that already matches the spec: start it
// again if it stopped and its restart policy says it should run.
func (d *DockerDriver) converge(ctx context.Context, inst Instance, id string) (Status, error) {
	ci, err := d.cli.ContainerInspect(ctx, id)
	if err != nil {
		return Status{State: StateFailed, Message: err.Error()}, fmt.Errorf("inspect: %w", err)
	}
	st := ci.State
	restart := st.Status == container.StateCreated ||
		(st.Status == container.StateExited &&
			(inst.RestartPolicy == RestartAlways || inst.RestartPolicy == RestartUnlessStopped))
	if restart {
		d.log.Info("starting stopped container", "app", inst.App, "container", id[:12], "state", st.Status)
		if err := d.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			return Status{State: StateFailed, Message: err.Error()}, fmt.Errorf("start %s: %w", d.ContainerName(inst.App), err)
		}
	}
	return d.statusOf(ctx, id)
}

func (d *DockerDriver) statusOf(ctx context.Context, id string) (Status, error) {
	ci, err := d.cli.ContainerInspect(ctx, id)
	if err != nil {
		return Status{State: StateFailed, Message: err.Error()}, fmt.Errorf("inspect: %w", err)
	}
	return containerStatus(ci.State.Status, ci.State.ExitCode, ci.State.Error), nil
}

func containerStatus(state container.ContainerState, exitCode int, errMsg string) Status {
	switch state {
	case container.StateRunning:
		return Status{State: StateRunning}
	case container.StateCreated:
		return Status{State: StateStarting, Message: "created"}
	case container.StateRestarting:
		return Status{State: StateStarting, Message: fmt.Sprintf("restarting after exit code %d", exitCode)}
	default:
		msg := fmt.Sprintf("container %s (exit code %d)", state, exitCode)
		if errMsg != "" {
			msg += ": " + errMsg
		}
		return Status{State: StateFailed, Message: msg}
	}
}

// ensureImage makes ref available as its pull policy says. IfNotPresent
// uses a local copy without asking any registry; Always pulls from the
// registry the image names, bounded by PullTimeout, and falls back to a
// copy already on the device: an edge site is often cut off from every
// registry, and images arrive by other means. Never only looks locally.
func (d *DockerDriver) ensureImage(ctx context.Context, ref, policy string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("image %q: %w", ref, err)
	}
	full := reference.TagNameOnly(named).String()
	if policy == PullIfNotPresent || policy == PullNever {
		_, err := d.cli.ImageInspect(ctx, full)
		switch {
		case err == nil:
			return nil
		case !cerrdefs.IsNotFound(err):
			return fmt.Errorf("%w: %s: the local copy could not be inspected: %v", ErrImageUnavailable, ref, err)
		case policy == PullNever:
			return fmt.Errorf("%w: %s: not present locally, and imagePullPolicy is Never", ErrImageUnavailable, ref)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, d.cfg.PullTimeout)
	pullErr := d.pull(pctx, full)
	cancel()
	if pullErr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if _, err := d.cli.ImageInspect(ctx, full); err == nil {
		d.log.Info("image pull failed; using the local copy", "image", ref, "err", pullErr)
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: %s: pull failed: %v; and the local copy could not be inspected: %v", ErrImageUnavailable, ref, pullErr, err)
	}
	return fmt.Errorf("%w: %s: pull failed: %v; and not present locally", ErrImageUnavailable, ref, pullErr)
}

func (d *DockerDriver) pull(ctx context.Context, ref string) error {
	rc, err := d.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	return jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
}

func (d *DockerDriver) create(ctx context.Context, inst Instance) (string, error) {
	name := d.ContainerName(inst.App)
	cfg := &container.Config{
		Image: inst.Image,
		Labels: map[string]string{
			LabelManaged:  "true",
			LabelNode:     d.cfg.Node,
			LabelApp:      inst.App,
			LabelVersion:  inst.Version,
			LabelSpecHash: inst.Hash,
		},
		ExposedPorts: nat.PortSet{},
	}
	if len(inst.Command) > 0 {
		cfg.Entrypoint = inst.Command
	}
	if len(inst.Args) > 0 {
		cfg.Cmd = inst.Args
	}
	for _, e := range inst.Env {
		cfg.Env = append(cfg.Env, e.Name+"="+e.Value)
	}
	hc := &container.HostConfig{
		PortBindings:  nat.PortMap{},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(inst.RestartPolicy)},
		Privileged:    inst.Privileged,
		Resources: container.Resources{
			Memory:            inst.MemoryLimit,
			MemoryReservation: inst.MemoryRequest,
			NanoCPUs:          inst.CPULimit * 1_000_000,
		},
	}
	if inst.CPURequest > 0 {
		// Relative weight, as the kubelet does: 1 core = 1024 shares.
		hc.CPUShares = max(2, inst.CPURequest*1024/1000)
	}
	for _, p := range inst.Ports {
		port := nat.Port(strconv.Itoa(p.ContainerPort) + "/" + p.Protocol)
		cfg.ExposedPorts[port] = struct{}{}
		if p.HostPort != 0 {
			hc.PortBindings[port] = append(hc.PortBindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: strconv.Itoa(p.HostPort)})
		}
	}
	for _, v := range inst.Volumes {
		// Binds, not Mounts: the engine creates a missing host directory,
		// which the Mounts API refuses before API 1.42.
		b := v.HostPath + ":" + v.ContainerPath
		if v.ReadOnly {
			b += ":ro"
		}
		hc.Binds = append(hc.Binds, b)
	}
	resp, err := d.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			return "", fmt.Errorf("container name %s: %w; rename or remove that container", name, ErrNotOwned)
		}
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	return resp.ID, nil
}

func (d *DockerDriver) removeContainer(ctx context.Context, id string) error {
	timeout := int(d.cfg.StopTimeout / time.Second)
	if err := d.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) {
		d.log.Warn("stop failed; removing anyway", "container", id[:12], "err", err)
	}
	err := d.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id[:12], err)
	}
	return nil
}

// Remove implements Driver.
func (d *DockerDriver) Remove(ctx context.Context, app string) error {
	cs, err := d.owned(ctx, app)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		d.log.Info("removing container", "app", app, "container", c.ID[:12])
		errs = append(errs, d.removeContainer(ctx, c.ID))
	}
	return errors.Join(errs...)
}

// List implements Driver.
func (d *DockerDriver) List(ctx context.Context) ([]Observed, error) {
	cs, err := d.owned(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]Observed, 0, len(cs))
	for _, c := range cs {
		st := containerStatus(c.State, 0, "")
		if st.State == StateFailed {
			st.Message = "container " + c.Status
		}
		out = append(out, Observed{
			App:     c.Labels[LabelApp],
			Version: c.Labels[LabelVersion],
			Hash:    c.Labels[LabelSpecHash],
			Status:  st,
		})
	}
	return out, nil
}

func (d *DockerDriver) inspectApp(ctx context.Context, app string) (container.InspectResponse, error) {
	cs, err := d.owned(ctx, app)
	if err != nil {
		return container.InspectResponse{}, err
	}
	if len(cs) == 0 {
		return container.InspectResponse{}, fmt.Errorf("no container for %s", app)
	}
	return d.cli.ContainerInspect(ctx, cs[0].ID)
}

// Endpoint implements Prober: the published host port when the manifest
// publishes port, else the container's own address.
func (d *DockerDriver) Endpoint(ctx context.Context, app string, port int) (string, error) {
	ci, err := d.inspectApp(ctx, app)
	if err != nil {
		return "", err
	}
	ns := ci.NetworkSettings
	if ns == nil {
		return "", fmt.Errorf("%s has no network settings", app)
	}
	for _, b := range ns.Ports[nat.Port(strconv.Itoa(port)+"/tcp")] {
		if b.HostPort == "" {
			continue
		}
		host := b.HostIP
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		return net.JoinHostPort(host, b.HostPort), nil
	}
	ip := ns.IPAddress
	if ip == "" {
		for _, n := range ns.Networks {
			if n != nil && n.IPAddress != "" {
				ip = n.IPAddress
				break
			}
		}
	}
	if ip == "" {
		return "", fmt.Errorf("%s: port %d is not published and the container has no address", app, port)
	}
	return net.JoinHostPort(ip, strconv.Itoa(port)), nil
}

// Exec implements Prober with docker exec.
func (d *DockerDriver) Exec(ctx context.Context, app string, cmd []string) (int, error) {
	ci, err := d.inspectApp(ctx, app)
	if err != nil {
		return -1, err
	}
	ex, err := d.cli.ContainerExecCreate(ctx, ci.ID, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return -1, fmt.Errorf("exec: %w", err)
	}
	resp, err := d.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, fmt.Errorf("exec: %w", err)
	}
	stop := context.AfterFunc(ctx, resp.Close)
	_, _ = io.Copy(io.Discard, resp.Reader)
	stop()
	resp.Close()
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	for {
		info, err := d.cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return -1, fmt.Errorf("exec: %w", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
