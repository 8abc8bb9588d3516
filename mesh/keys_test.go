package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv/wait"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func newTestMesh(t *testing.T, name string, keys ...[]byte) *Mesh {
	t.Helper()
	m, err := New(Config{Bind: "127.0.0.1:0", Keys: keys, ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		PushPullInterval: time.Second}, Identity{Name: name, Role: "sensor"}, Health{State: StateReady})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func seesAll(ms ...*Mesh) error {
	for _, m := range ms {
		alive := 0
		for _, mb := range m.Members() {
			if mb.Alive {
				alive++
			}
		}
		if alive != len(ms) {
			return fmt.Errorf("%s sees %d alive, want %d", m.local.Name, alive, len(ms))
		}
	}
	return nil
}

// A node that lacks the gossip key cannot join the mesh nor read it; after
// a rotation (add, use, remove) every member keeps talking and the old key
// is gone.
func TestKeyringJoinAndRotate(t *testing.T) {
	a := newTestMesh(t, "a", key(1))
	b := newTestMesh(t, "b", key(1))
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 10*time.Second, func() error { return seesAll(a, b) })

	stranger := newTestMesh(t, "stranger", key(9))
	if _, err := stranger.Join([]string{a.Addr()}); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("join with another key: %v, want refused", err)
	}
	plain := newTestMesh(t, "plain")
	if _, err := plain.Join([]string{a.Addr()}); err == nil {
		t.Fatal("join without encryption succeeded")
	}
	if err := plain.AddKey(key(2)); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("AddKey on an unencrypted mesh: %v", err)
	}
	for _, m := range []*Mesh{stranger, plain} {
		if len(m.Members()) != 1 {
			t.Errorf("%s learned of %d members", m.local.Name, len(m.Members()))
		}
	}

	// Rotate: both add, both switch, both remove.
	for _, m := range []*Mesh{a, b} {
		if err := m.AddKey(key(2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.UseKey(key(2)); err != nil {
		t.Fatal(err)
	}
	// Half-switched: still talking.
	a.Update(Health{State: StateReady, Message: "half"})
	wait.Eventually(t, 10*time.Second, func() error {
		if m, _ := b.Member("a"); m.Health.Message != "half" {
			return errors.New("b did not hear a's update under the new key")
		}
		return nil
	})
	if err := b.UseKey(key(2)); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveKey(key(2)); err == nil {
		t.Fatal("removed the primary key")
	}
	for _, m := range []*Mesh{a, b} {
		if err := m.RemoveKey(key(1)); err != nil {
			t.Fatal(err)
		}
		if ks := m.Keys(); len(ks) != 1 || !bytes.Equal(ks[0], key(2)) {
			t.Fatalf("%s keyring after rotation: %d keys", m.local.Name, len(ks))
		}
	}
	b.Update(Health{State: StateReady, Message: "after"})
	wait.Eventually(t, 10*time.Second, func() error {
		if m, _ := a.Member("b"); m.Health.Message != "after" {
			return errors.New("a did not hear b after the rotation")
		}
		return seesAll(a, b)
	})
	// The old key no longer gets anyone in.
	late := newTestMesh(t, "late", key(1))
	if _, err := late.Join([]string{a.Addr()}); err == nil {
		t.Fatal("joined with the removed key")
	}
}
