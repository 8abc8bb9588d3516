package apps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kubernetes labels and annotations that mark what fleetmesh owns in the
// device's own cluster (k3s on a compute node).
const (
	K8sLabelManaged = "fleetmesh.io/managed"
	K8sLabelNode    = "fleetmesh.io/node"
	K8sLabelApp     = "fleetmesh.io/app"
	K8sAnnVersion   = "fleetmesh.io/version"
	K8sAnnSpecHash  = "fleetmesh.io/spec-hash"
)

// KubernetesConfig configures a KubernetesDriver.
type KubernetesConfig struct {
	// Node is this device's name, in every object's K8sLabelNode.
	Node string
	// Namespace holds the applications. Default "fleetmesh".
	Namespace string
	// Kubeconfig is passed to kubectl when set.
	Kubeconfig string
	// WorkDir keeps the generated manifests kubectl applies. Required.
	WorkDir string
	// Runner runs kubectl. Default ExecRunner.
	Runner Runner
	Logger *slog.Logger
}

// KubernetesDriver runs TypeKubernetes applications as Deployments in the
// device's cluster with `kubectl apply`. It sees only Deployments labelled
// fleetmesh.io/managed=true and fleetmesh.io/node=<this node>.
type KubernetesDriver struct {
	cfg KubernetesConfig
	log *slog.Logger
}

var _ interface {
	Driver
	Prober
} = (*KubernetesDriver)(nil)

// NewKubernetesDriver returns a driver for cfg.
func NewKubernetesDriver(cfg KubernetesConfig) (*KubernetesDriver, error) {
	if cfg.Node == "" || cfg.WorkDir == "" {
		return nil, errors.New("kubernetes driver: Node and WorkDir are required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "fleetmesh"
	}
	if cfg.Runner == nil {
		cfg.Runner = ExecRunner{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KubernetesDriver{cfg: cfg, log: log.With("component", "apps.kubernetes")}, nil
}

func (d *KubernetesDriver) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	if d.cfg.Kubeconfig != "" {
		args = append([]string{"--kubeconfig", d.cfg.Kubeconfig}, args...)
	}
	return d.cfg.Runner.Run(ctx, "kubectl", args...)
}

func (d *KubernetesDriver) selector(app string) string {
	s := K8sLabelManaged + "=true," + K8sLabelNode + "=" + d.cfg.Node
	if app != "" {
		s += "," + K8sLabelApp + "=" + app
	}
	return s
}

type k8sDeploymentList struct {
	Items []struct {
		Metadata struct {
			Name        string            `json:"name"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Replicas *int `json:"replicas"`
		} `json:"spec"`
		Status struct {
			ReadyReplicas int `json:"readyReplicas"`
		} `json:"status"`
	} `json:"items"`
}

// List implements Driver.
func (d *KubernetesDriver) List(ctx context.Context) ([]Observed, error) {
	return d.list(ctx, "")
}

func (d *KubernetesDriver) list(ctx context.Context, app string) ([]Observed, error) {
	out, err := d.kubectl(ctx, "get", "deployments", "--namespace", d.cfg.Namespace,
		"--selector", d.selector(app), "--output", "json")
	if err != nil {
		return nil, err
	}
	var l k8sDeploymentList
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("kubectl get deployments: %w", err)
	}
	var obs []Observed
	for _, it := range l.Items {
		// The label selector already filtered; check again, cheaply.
		if it.Metadata.Labels[K8sLabelManaged] != "true" || it.Metadata.Labels[K8sLabelNode] != d.cfg.Node {
			continue
		}
		want := 1
		if it.Spec.Replicas != nil {
			want = *it.Spec.Replicas
		}
		st := Status{State: StateRunning}
		if it.Status.ReadyReplicas < want {
			st = Status{State: StateStarting, Message: fmt.Sprintf("%d of %d replicas ready", it.Status.ReadyReplicas, want)}
		}
		obs = append(obs, Observed{
			App:     it.Metadata.Labels[K8sLabelApp],
			Version: it.Metadata.Annotations[K8sAnnVersion],
			Hash:    it.Metadata.Annotations[K8sAnnSpecHash],
			Status:  st,
		})
	}
	return obs, nil
}

// Ensure implements Driver.
func (d *KubernetesDriver) Ensure(ctx context.Context, inst Instance, progress func(Status)) (Status, error) {
	fail := func(err error) (Status, error) { return Status{State: StateFailed, Message: err.Error()}, err }
	if inst.Type != TypeKubernetes {
		return fail(fmt.Errorf("kubernetes driver: type %s: %w", inst.Type, ErrUnsupported))
	}
	cur, err := d.list(ctx, inst.App)
	if err != nil {
		return fail(err)
	}
	if len(cur) == 1 && cur[0].Hash == inst.Hash {
		return cur[0].Status, nil
	}
	doc, err := RenderKubernetes(inst, d.cfg.Node, d.cfg.Namespace)
	if err != nil {
		return fail(err)
	}
	path := filepath.Join(d.cfg.WorkDir, "k8s-"+inst.App+".yaml")
	if err := writeFileAtomic(path, doc, 0o600); err != nil {
		return fail(err)
	}
	if progress != nil {
		progress(Status{State: StateStarting})
	}
	d.log.Info("applying deployment", "app", inst.App, "version", inst.Version)
	if _, err := d.kubectl(ctx, "apply", "--filename", path); err != nil {
		return fail(err)
	}
	return Status{State: StateStarting, Message: "applied"}, nil
}

// Remove implements Driver; the label selector limits it to what this
// node owns.
func (d *KubernetesDriver) Remove(ctx context.Context, app string) error {
	_, err := d.kubectl(ctx, "delete", "deployments", "--namespace", d.cfg.Namespace,
		"--selector", d.selector(app), "--ignore-not-found")
	if err == nil {
		os.Remove(filepath.Join(d.cfg.WorkDir, "k8s-"+app+".yaml"))
	}
	return err
}

// Endpoint implements Prober: probes go to the host port the pod
// publishes (hostPort), as on the other host drivers.
func (d *KubernetesDriver) Endpoint(_ context.Context, _ string, port int) (string, error) {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Exec implements Prober with kubectl exec.
func (d *KubernetesDriver) Exec(ctx context.Context, app string, cmd []string) (int, error) {
	args := append([]string{"exec", "--namespace", d.cfg.Namespace, "deployment/" + k8sName(app), "--"}, cmd...)
	_, err := d.kubectl(ctx, args...)
	return exitStatus(err)
}

func k8sName(app string) string { return "fleetmesh-" + app }

// RenderKubernetes generates the Namespace and Deployment that run inst in
// the device's cluster. A Deployment's pods always restart, so the
// manifest's restartPolicy does not apply.
func RenderKubernetes(inst Instance, node, namespace string) ([]byte, error) {
	labels := map[string]string{K8sLabelManaged: "true", K8sLabelNode: node, K8sLabelApp: inst.App}
	ctr := map[string]any{"name": inst.App, "image": inst.Image}
	if len(inst.Command) > 0 {
		ctr["command"] = inst.Command
	}
	if len(inst.Args) > 0 {
		ctr["args"] = inst.Args
	}
	var env []map[string]string
	for _, e := range inst.Env {
		env = append(env, map[string]string{"name": e.Name, "value": e.Value})
	}
	if env != nil {
		ctr["env"] = env
	}
	var ports []map[string]any
	for _, p := range inst.Ports {
		port := map[string]any{"containerPort": p.ContainerPort, "protocol": strings.ToUpper(p.Protocol)}
		if p.HostPort != 0 {
			port["hostPort"] = p.HostPort
		}
		if p.HostIP != "" {
			port["hostIP"] = p.HostIP
		}
		ports = append(ports, port)
	}
	if ports != nil {
		ctr["ports"] = ports
	}
	res := map[string]map[string]string{}
	add := func(kind, key string, v int64, format func(int64) string) {
		if v > 0 {
			if res[kind] == nil {
				res[kind] = map[string]string{}
			}
			res[kind][key] = format(v)
		}
	}
	bytesQ := func(v int64) string { return strconv.FormatInt(v, 10) }
	milliQ := func(v int64) string { return strconv.FormatInt(v, 10) + "m" }
	add("requests", "memory", inst.MemoryRequest, bytesQ)
	add("requests", "cpu", inst.CPURequest, milliQ)
	add("limits", "memory", inst.MemoryLimit, bytesQ)
	add("limits", "cpu", inst.CPULimit, milliQ)
	if len(res) > 0 {
		ctr["resources"] = res
	}
	if inst.Privileged {
		ctr["securityContext"] = map[string]any{"privileged": true}
	}
	var vols []map[string]any
	var mounts []map[string]any
	for i, v := range inst.Volumes {
		name := fmt.Sprintf("vol%d", i)
		vols = append(vols, map[string]any{"name": name, "hostPath": map[string]any{"path": v.HostPath, "type": "DirectoryOrCreate"}})
		mounts = append(mounts, map[string]any{"name": name, "mountPath": v.ContainerPath, "readOnly": v.ReadOnly})
	}
	if mounts != nil {
		ctr["volumeMounts"] = mounts
	}
	pod := map[string]any{"containers": []any{ctr}}
	if vols != nil {
		pod["volumes"] = vols
	}
	objs := []any{
		map[string]any{
			"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": namespace},
		},
		map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{
				"name": k8sName(inst.App), "namespace": namespace, "labels": labels,
				"annotations": map[string]string{K8sAnnVersion: inst.Version, K8sAnnSpecHash: inst.Hash},
			},
			"spec": map[string]any{
				"replicas": 1,
				"selector": map[string]any{"matchLabels": labels},
				// Recreate: host ports cannot be held by two pods.
				"strategy": map[string]any{"type": "Recreate"},
				"template": map[string]any{
					"metadata": map[string]any{"labels": labels},
					"spec":     pod,
				},
			},
		},
	}
	var b strings.Builder
	for i, o := range objs {
		if i > 0 {
			b.WriteString("---\n")
		}
		out, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		b.Write(out)
	}
	return []byte(b.String()), nil
}
