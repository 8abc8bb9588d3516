package consensus

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// randomCommand makes a command of any op, often about entries that exist
// (so that revocations, joins and removals succeed), sometimes not.
func randomCommand(r *rand.Rand, s *Spec, i int) *Command {
	pick := func(m []string) string {
		if len(m) == 0 || r.IntN(8) == 0 {
			return fmt.Sprintf("missing-%d", r.IntN(3))
		}
		return m[r.IntN(len(m))]
	}
	var toks, devs, ops, apps []string
	for k := range s.Tokens {
		toks = append(toks, k)
	}
	for k := range s.Devices {
		devs = append(devs, k)
	}
	for k := range s.Operators {
		ops = append(ops, k)
	}
	for k := range s.Apps {
		apps = append(apps, k)
	}
	at := time.Unix(1000, 0).Add(time.Duration(i) * time.Second).UTC()
	switch r.IntN(15) {
	case 14:
		// Some listed tokens are past retention at Time, some not, one
		// does not exist.
		ids := []string{pick(toks)}
		for _, t := range toks {
			if r.IntN(3) == 0 {
				ids = append(ids, t)
			}
		}
		// Token j (made at step j) expires at step j plus an hour, so a
		// prune at this step k seconds early removes those made up to
		// step i-k.
		early := time.Duration(r.IntN(i)) * time.Second
		return &Command{Op: OpPruneTokens, Time: at.Add(TokenRetention + time.Hour - early), IDs: ids}
	case 0:
		return &Command{Op: OpCreateToken, Token: &JoinToken{ID: fmt.Sprintf("t%d", i), Hash: "h", Role: "sensor", Expires: at.Add(time.Hour), MaxUses: r.IntN(3)}}
	case 1:
		return &Command{Op: OpRevokeToken, ID: pick(toks)}
	case 2:
		t := pick(toks)
		return &Command{Op: OpJoin, Join: &JoinCommand{TokenID: t, TokenHash: "h",
			Device: &Device{Name: fmt.Sprintf("d%d", r.IntN(20)), Role: "sensor", KeyID: "k", CertSerial: fmt.Sprintf("s%d", i)}}}
	case 3:
		return &Command{Op: OpRegisterDevice, Device: &Device{Name: fmt.Sprintf("d%d", r.IntN(20)), Role: "compute", Serial: "x"}}
	case 4:
		return &Command{Op: OpRemoveDevice, ID: pick(devs), RotateKey: r.IntN(2) == 0}
	case 5:
		return &Command{Op: OpCreateOperator, Operator: &Operator{ID: fmt.Sprintf("o%d", i), Hash: "h", Role: OperatorViewer}}
	case 6:
		return &Command{Op: OpRevokeOperator, ID: pick(ops)}
	case 7:
		name := pick(apps)
		if r.IntN(2) == 0 {
			name = fmt.Sprintf("app%d", r.IntN(4))
		}
		return &Command{Op: OpDeployApp, ID: name, App: &AppVersion{Version: fmt.Sprintf("v%d", r.IntN(3)), Manifest: json.RawMessage(fmt.Sprintf(`{"v":%d}`, r.IntN(2)))}}
	case 8:
		return &Command{Op: OpRemoveApp, ID: pick(apps)}
	case 9:
		kind := []string{"rollouts", "policies"}[r.IntN(2)]
		return &Command{Op: OpPutDocument, Kind: kind, ID: fmt.Sprintf("doc%d", r.IntN(3)), Doc: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
	case 10:
		kind := []string{"rollouts", "policies"}[r.IntN(2)]
		return &Command{Op: OpDeleteDocument, Kind: kind, ID: fmt.Sprintf("doc%d", r.IntN(3))}
	case 11:
		return &Command{Op: OpRotateKey, ID: pick(devs)}
	case 12:
		if len(s.Gossip.Keys) > 0 {
			return &Command{Op: OpUseKey, ID: s.Gossip.Keys[r.IntN(len(s.Gossip.Keys))]}
		}
		return &Command{Op: OpPruneKeys}
	default:
		return &Command{Op: OpRenewCert, ID: pick(devs), Serial: fmt.Sprintf("r%d", i)}
	}
}

func specJSON(t *testing.T, s *Spec) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A delta from any earlier version, applied to the spec as it was then,
// gives exactly the current spec: every command records every entry it
// changes. Random commands of every op, many of them refused.
func TestDeltaMatchesSpec(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			f := newFSM()
			if err := applyCmd(t, f, 1, initCmd()); err != nil {
				t.Fatal(err)
			}
			past := map[uint64]*Spec{1: f.spec.Clone()}
			for i := 2; i < 400; i++ {
				applyCmd(t, f, uint64(i), randomCommand(r, f.spec, i)) // refusals are part of the test
				past[f.spec.Version] = f.spec.Clone()
				if i%50 != 0 {
					continue
				}
				want := specJSON(t, f.spec)
				for v, old := range past {
					b, to, ok, err := f.deltaJSON(v)
					if err != nil || !ok || to != f.spec.Version {
						t.Fatalf("delta from %d: ok %v, to %d (want %d), err %v", v, ok, to, f.spec.Version, err)
					}
					d, err := DecodeDelta(b)
					if err != nil {
						t.Fatal(err)
					}
					got, err := old.ApplyDelta(d)
					if err != nil {
						t.Fatal(err)
					}
					if g := specJSON(t, got); g != want {
						t.Fatalf("after %d commands, delta from version %d differs from the spec:\n got %s\nwant %s", i, v, g, want)
					}
					if specJSON(t, old) != specJSON(t, past[v]) {
						t.Fatalf("applying a delta changed the old spec")
					}
				}
			}
		})
	}
}

// Past the bounded record, or ahead of the spec, there is no delta: the
// caller must take the whole spec. So after a restore.
func TestDeltaBounds(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, 1, initCmd()); err != nil {
		t.Fatal(err)
	}
	n := uint64(2*maxChanges + 10)
	for i := uint64(2); i <= n; i++ {
		if err := applyCmd(t, f, i, &Command{Op: OpCreateToken, Token: &JoinToken{ID: fmt.Sprint("t", i), Hash: "h", Role: "sensor"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, ok, _ := f.deltaJSON(1); ok {
		t.Fatal("a delta from before the record's floor was served")
	}
	if _, _, ok, _ := f.deltaJSON(n + 1); ok {
		t.Fatal("a delta from a version ahead of the spec was served")
	}
	b, to, ok, err := f.deltaJSON(n - 3)
	if !ok || err != nil || to != n {
		t.Fatalf("recent delta: ok %v to %d err %v", ok, to, err)
	}
	d, _ := DecodeDelta(b)
	if len(d.Changed.Tokens) != 3 {
		t.Fatalf("delta from %d to %d carries %d tokens, want 3", n-3, n, len(d.Changed.Tokens))
	}

	var buf sinkBuf
	snap, _ := f.Snapshot()
	snap.Persist(&buf)
	g := newFSM()
	if err := g.Restore(&readCloser{b: buf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := g.deltaJSON(n - 3); ok {
		t.Fatal("a restored FSM served a delta from before the snapshot")
	}
	if _, _, ok, _ := g.deltaJSON(n); !ok {
		t.Fatal("a restored FSM cannot serve an empty delta at its own version")
	}

	// A delta that does not start at the copy's version is refused.
	old := newSpec()
	old.Version = 5
	old.ClusterID = "c1"
	if _, err := old.ApplyDelta(d); err == nil {
		t.Fatal("delta from another version applied")
	}
}
