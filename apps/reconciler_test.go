package apps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv/wait"
)

// fakeDriver keeps "running" applications in a map.
type fakeDriver struct {
	mu      sync.Mutex
	running map[string]Observed
	ensured int
	removed []string
}

func newFakeDriver() *fakeDriver { return &fakeDriver{running: map[string]Observed{}} }

func (f *fakeDriver) Ensure(_ context.Context, inst Instance, progress func(Status)) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured++
	if progress != nil {
		progress(Status{State: StateStarting})
	}
	f.running[inst.App] = Observed{App: inst.App, Version: inst.Version, Hash: inst.Hash, Status: Status{State: StateRunning}}
	return Status{State: StateRunning}, nil
}

func (f *fakeDriver) Remove(_ context.Context, app string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, app)
	f.removed = append(f.removed, app)
	return nil
}

func (f *fakeDriver) List(context.Context) ([]Observed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Observed
	for _, o := range f.running {
		out = append(out, o)
	}
	return out, nil
}

func (f *fakeDriver) has(app string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.running[app]
	return ok
}

func fakeManifest(t *testing.T, name, typ, selector string) *Manifest {
	t.Helper()
	var body string
	switch typ {
	case "container":
		body = "type: container, image: x/" + name + ":1"
	case "systemd":
		body = "type: systemd, command: [/bin/" + name + "]"
	case "snap":
		body = "type: snap, image: " + name
	}
	doc := fmt.Sprintf("apiVersion: fleetmesh.io/v1\nkind: EdgeApplication\nmetadata: {name: %s, version: \"1\"}\nspec:\n  selector: %s\n  deployment: {%s}\n", name, selector, body)
	m, err := ParseAndValidate([]byte(doc), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReconcilerMovesAppsBetweenDriversAndNodes(t *testing.T) {
	ctx := context.Background()
	ctr, sysd := newFakeDriver(), newFakeDriver()
	r, err := NewReconciler(ReconcilerConfig{
		Node:    NodeInfo{Name: "s1", Role: "sensor", Labels: map[string]string{"line": "1"}},
		Drivers: map[DeploymentType]Driver{TypeContainer: ctr, TypeSystemd: sysd},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.SetDesired(Desired{Index: 1, Apps: []*Manifest{
		fakeManifest(t, "a", "container", "{role: sensor}"),
		fakeManifest(t, "b", "container", "{labels: {line: \"1\"}}"),
		fakeManifest(t, "gw", "container", "{role: gateway}"),
		fakeManifest(t, "nosnap", "snap", "{}"),
	}})
	err = r.Reconcile(ctx)
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("err = %v, want ErrUnsupported for the snap app", err)
	}
	if !ctr.has("a") || !ctr.has("b") || ctr.has("gw") {
		t.Errorf("container driver runs %v", ctr.running)
	}
	st := r.Status()
	if st["nosnap"].State != StateFailed || !strings.Contains(st["nosnap"].Message, "no snap driver") {
		t.Errorf("nosnap = %+v", st["nosnap"])
	}
	if _, ok := st["gw"]; ok {
		t.Error("status for an app not meant for this node")
	}

	// a changes type: it leaves the container driver for systemd.
	r.SetDesired(Desired{Index: 2, Apps: []*Manifest{
		fakeManifest(t, "a", "systemd", "{role: sensor}"),
		fakeManifest(t, "b", "container", "{labels: {line: \"1\"}}"),
	}})
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if ctr.has("a") || !sysd.has("a") {
		t.Errorf("a: container %v, systemd %v", ctr.running, sysd.running)
	}
	if st := r.Status()["a"]; st.State != StateRunning {
		t.Errorf("a = %+v", st)
	}

	// The node's labels change: b no longer matches and goes.
	r.SetNode(NodeInfo{Name: "s1", Role: "sensor", Labels: map[string]string{"line": "2"}})
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if ctr.has("b") {
		t.Error("b still runs after its selector stopped matching")
	}
	if _, ok := r.Status()["b"]; ok {
		t.Error("b still has a status")
	}

	if err := r.SetDesired(Desired{Index: 3, Apps: []*Manifest{fakeManifest(t, "a", "container", "{}"), fakeManifest(t, "a", "systemd", "{}")}}); err == nil {
		t.Error("a desired set with an app twice was accepted")
	}
}

func TestReconcilerRunTriggers(t *testing.T) {
	drv := newFakeDriver()
	r, err := NewReconciler(ReconcilerConfig{
		Node:           NodeInfo{Name: "s1", Role: "sensor"},
		Drivers:        map[DeploymentType]Driver{TypeContainer: drv},
		ResyncInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()
	r.SetDesired(Desired{Index: 1, Apps: []*Manifest{fakeManifest(t, "a", "container", "{}")}})
	wait.Eventually(t, 5*time.Second, func() error {
		if !drv.has("a") {
			return errors.New("a not ensured after SetDesired")
		}
		return nil
	})
	// Drift: the application disappears behind the reconciler's back.
	drv.Remove(context.Background(), "a")
	r.Trigger()
	wait.Eventually(t, 5*time.Second, func() error {
		if !drv.has("a") {
			return errors.New("a not repaired after Trigger")
		}
		return nil
	})
}

func TestLastAppliedStore(t *testing.T) {
	dir := t.TempDir()
	s := NewLastApplied(dir)
	if _, ok, err := s.Load(); ok || err != nil {
		t.Fatalf("empty store: ok %v err %v", ok, err)
	}
	m, err := ParseAndValidate(mustReadExample(t), ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(Desired{Index: 9, Apps: []*Manifest{m}}); err != nil {
		t.Fatal(err)
	}
	d, ok, err := s.Load()
	if !ok || err != nil || d.Index != 9 || len(d.Apps) != 1 {
		t.Fatalf("Load = %+v %v %v", d, ok, err)
	}
	a, _ := Resolve(m, NodeInfo{Name: "n"})
	b, _ := Resolve(d.Apps[0], NodeInfo{Name: "n"})
	if a.Hash != b.Hash {
		t.Error("a manifest changed on its way through the store")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if fi, _ := os.Stat(s.Path()); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v", fi.Mode())
	}

	// A torn or foreign file: the reconciler waits for the spec and
	// removes nothing.
	os.WriteFile(filepath.Join(dir, LastAppliedFile), []byte(`{"format":1,"apps":[`), 0o600)
	if _, ok, err := s.Load(); ok || err == nil {
		t.Errorf("corrupt store: ok %v err %v", ok, err)
	}
	drv := newFakeDriver()
	drv.running["old"] = Observed{App: "old"}
	r, err := NewReconciler(ReconcilerConfig{Node: NodeInfo{Name: "n"}, Drivers: map[DeploymentType]Driver{TypeContainer: drv}, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	r.Reconcile(context.Background())
	if !drv.has("old") {
		t.Error("a reconciler with an unreadable store removed an application")
	}
}
