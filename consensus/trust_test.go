package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func applyCmd(t *testing.T, f *fsm, idx uint64, c *Command) error {
	t.Helper()
	if c.Time.IsZero() {
		c.Time = time.Unix(1000, 0).UTC()
	}
	if err := fillKey(c); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c)
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(Result).Err
}

type sinkBuf struct{ bytes.Buffer }

func (s *sinkBuf) ID() string    { return "x" }
func (s *sinkBuf) Cancel() error { return nil }
func (s *sinkBuf) Close() error  { return nil }

func TestFSMTrust(t *testing.T) {
	f := newFSM()
	k0 := bytes.Repeat([]byte{7}, 32)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(applyCmd(t, f, 1, &Command{Op: OpInit, Init: &InitCommand{ClusterID: "c", Secrets: Secrets{GossipKey: k0},
		Admin: &Operator{ID: "a", Role: OperatorAdmin}, Device: &Device{Name: "gw1", Role: "gateway", CertSerial: "aa"}}}))
	f.spec.Devices["s1"] = &Device{Name: "s1", Role: "sensor", State: DeviceJoined, CertSerial: "bb"}

	// The last admin cannot be revoked; a refused command is audited.
	err := applyCmd(t, f, 2, &Command{Op: OpRevokeOperator, ID: "a", Audit: &AuditEntry{OperatorID: "a"}})
	if !errors.Is(err, ErrLastAdmin) || len(f.audit) != 1 || f.audit[0].Result != "error" || f.audit[0].Index != 2 {
		t.Fatalf("revoke last admin: %v, audit %+v", err, f.audit)
	}

	// Evicting an edge revokes its serial and starts a rotation with a key
	// the proposer did not choose.
	must(applyCmd(t, f, 3, &Command{Op: OpRemoveDevice, ID: "s1", RotateKey: true, Key: k0}))
	g := f.spec.Gossip
	if !f.spec.IsRevoked("bb", "whatever") || !f.spec.IsRevoked("zz", "s1") || f.spec.IsRevoked("aa", "gw1") {
		t.Fatal("revocation by serial or name wrong")
	}
	if len(g.Keys) != 2 || g.Target == g.Primary || bytes.Equal(f.secrets.GossipKeys[1], k0) {
		t.Fatalf("rotation not started right: %+v", g)
	}
	if !errors.Is(applyCmd(t, f, 4, &Command{Op: OpUseKey, ID: "nope"}), ErrKeyUnknown) {
		t.Fatal("use of an unknown key accepted")
	}
	must(applyCmd(t, f, 5, &Command{Op: OpUseKey, ID: g.Target}))
	must(applyCmd(t, f, 6, &Command{Op: OpPruneKeys}))
	if g := f.spec.Gossip; g.Rotating() || len(f.secrets.Keyring()) != 1 || KeyFingerprint(f.secrets.GossipKey) != g.Primary {
		t.Fatalf("after prune: %+v", g)
	}

	// An evicted gateway is rekeyed only later, by ID.
	f.spec.Devices["gw2"] = &Device{Name: "gw2", Role: "gateway", State: DeviceJoined}
	must(applyCmd(t, f, 7, &Command{Op: OpRemoveDevice, ID: "gw2", RotateKey: true}))
	if !f.spec.Devices["gw2"].RekeyPending || f.spec.Gossip.Rotating() {
		t.Fatal("gateway eviction rotated at once")
	}
	must(applyCmd(t, f, 8, &Command{Op: OpRotateKey, ID: "gw2"}))
	if f.spec.Devices["gw2"].RekeyPending || !f.spec.Gossip.Rotating() {
		t.Fatal("pending rekey not done")
	}

	// The audit log is bounded and survives a snapshot.
	for i := range MaxAudit + 5 {
		f.appendAudit(AuditEntry{Index: uint64(100 + i)})
	}
	snap, _ := f.Snapshot()
	var buf sinkBuf
	must(snap.Persist(&buf))
	g2 := newFSM()
	must(g2.Restore(io.NopCloser(&buf)))
	if len(g2.audit) != MaxAudit || g2.audit[MaxAudit-1].Index != uint64(100+MaxAudit+4) {
		t.Fatalf("audit after restore: %d entries", len(g2.audit))
	}
	if !g2.spec.IsRevoked("bb", "") || len(g2.secrets.Keyring()) != 2 {
		t.Fatal("revocations or keyring lost in the snapshot")
	}
}

// A removal refused for its rotation key changes nothing: the device is not
// marked evicted nor its certificate revoked.
func TestRemoveDeviceRefusedChangesNothing(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, 1, initCmd()); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, 2, &Command{Op: OpRegisterDevice, Device: &Device{Name: "s1", Role: "sensor", CertSerial: "ab"}}); err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(f.spec)
	b, _ := json.Marshal(&Command{Op: OpRemoveDevice, ID: "s1", RotateKey: true, Key: []byte("short"), Time: time.Unix(1000, 0).UTC()})
	res := f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: b}).(Result)
	if !errors.Is(res.Err, ErrBadCommand) {
		t.Fatalf("removal with a 5-byte key: %v, want ErrBadCommand", res.Err)
	}
	if after, _ := json.Marshal(f.spec); string(after) != string(before) {
		t.Fatalf("a refused removal changed the spec:\nbefore %s\nafter  %s", before, after)
	}
}
