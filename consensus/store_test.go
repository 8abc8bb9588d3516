package consensus

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node/pki"
	"github.com/fleetmesh/fleetmesh/testenv/wait"
	"github.com/hashicorp/raft"
)

func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, _ := pki.NewKey()
	csr, _ := pki.CSR("n1", key)
	cert, err := ca.Sign(csr, "n1", "gateway", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadIdentity(cert, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id.MutualServerTLS(), id.ClientTLS()
}

func openTest(t *testing.T, dir string, bootstrap bool) *Store {
	t.Helper()
	srv, cli := testTLS(t)
	s, err := Open(Config{NodeID: "n1", Dir: dir, Bind: "127.0.0.1:0", ServerTLS: srv, ClientTLS: cli, Bootstrap: bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 10*time.Second, func() error {
		if !s.IsLeader() {
			return errors.New("not leader yet")
		}
		return nil
	})
	return s
}

func initCmd() *Command {
	return &Command{Op: OpInit, Init: &InitCommand{ClusterID: "c1", CACertPEM: "ca",
		Secrets: Secrets{CAKeyPEM: []byte("key"), GossipKey: []byte("0123456789abcdef0123456789abcdef")},
		Admin:   &Operator{ID: "op1", Hash: "h", Role: OperatorAdmin},
		Device:  &Device{Name: "n1", Role: "gateway", State: DeviceJoined}}}
}

// Snapshots capture the whole spec and the secrets, and a restart restores
// them from the snapshot plus the log after it.
func TestSnapshotRestoreAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, true)
	ctx := context.Background()
	if _, err := s.Apply(ctx, initCmd()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		tok := &JoinToken{ID: fmt.Sprintf("t%03d", i), Hash: "h", Role: "sensor", Expires: time.Now().Add(time.Hour)}
		if _, err := s.Apply(ctx, &Command{Op: OpCreateToken, Token: tok}); err != nil {
			t.Fatal(err)
		}
		if i == 20 {
			if err := s.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, _, _ := s.SpecJSON()
	wantSecrets := s.Secrets()
	s.Close()

	s2 := openTest(t, dir, true) // bootstrap is ignored: state exists
	defer s2.Close()
	wait.Eventually(t, 10*time.Second, func() error {
		got, _, _ := s2.SpecJSON()
		if string(got) != string(want) {
			return errors.New("spec not restored yet")
		}
		return nil
	})
	if !reflect.DeepEqual(s2.Secrets(), wantSecrets) {
		t.Fatal("secrets not restored")
	}
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	f := newFSM()
	apply := func(i uint64, c *Command) Result {
		b, _ := json.Marshal(c)
		return f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: b}).(Result)
	}
	apply(1, initCmd())
	apply(2, &Command{Op: OpCreateToken, Token: &JoinToken{ID: "abc", Hash: "h", Role: "sensor", MaxUses: 1}})
	if r := apply(3, &Command{Op: OpDeployApp, ID: "collector", App: &AppVersion{Version: "1", Manifest: json.RawMessage(`{"v":1}`)}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(sink.reader()); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(f.spec)
	b, _ := json.Marshal(g.spec)
	if string(a) != string(b) || !reflect.DeepEqual(f.secrets, g.secrets) {
		t.Fatalf("restore differs:\n%s\n%s", a, b)
	}
}

// The FSM decides joins from the command's time, never its own clock, and
// refuses without changing anything.
func TestFSMJoinRules(t *testing.T) {
	f := newFSM()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	idx := uint64(0)
	apply := func(c *Command) error {
		idx++
		b, _ := json.Marshal(c)
		return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(Result).Err
	}
	apply(initCmd())
	apply(&Command{Op: OpCreateToken, Token: &JoinToken{ID: "one", Hash: "h1", Role: "sensor", MaxUses: 1, Expires: now.Add(time.Hour)}})
	join := func(tokID, hash, name, role string, at time.Time) error {
		return apply(&Command{Op: OpJoin, Time: at, Join: &JoinCommand{TokenID: tokID, TokenHash: hash, Device: &Device{Name: name, Role: role}}})
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"wrong hash", join("one", "nope", "a", "sensor", now), ErrTokenUnknown},
		{"unknown id", join("two", "h1", "a", "sensor", now), ErrTokenUnknown},
		{"wrong role", join("one", "h1", "a", "compute", now), ErrTokenRole},
		{"expired", join("one", "h1", "a", "sensor", now.Add(2*time.Hour)), ErrTokenExpired},
		{"ok", join("one", "h1", "a", "sensor", now), nil},
		{"used up", join("one", "h1", "b", "sensor", now), ErrTokenUsedUp},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	if len(f.spec.Devices) != 2 || f.spec.Tokens["one"].Uses != 1 {
		t.Fatalf("refused joins changed the spec: %d devices, %d uses", len(f.spec.Devices), f.spec.Tokens["one"].Uses)
	}
	// The same device retrying the same join (same key, same token) is
	// answered again without spending a use; another key is another device.
	apply(&Command{Op: OpCreateToken, Token: &JoinToken{ID: "k", Hash: "hk", Role: "sensor", MaxUses: 1}})
	joinKey := func(name, key string) error {
		return apply(&Command{Op: OpJoin, Time: now, Join: &JoinCommand{TokenID: "k", TokenHash: "hk", Device: &Device{Name: name, Role: "sensor", KeyID: key}}})
	}
	if err := joinKey("kd", "key1"); err != nil {
		t.Fatal(err)
	}
	if err := joinKey("kd", "key1"); err != nil || f.spec.Tokens["k"].Uses != 1 {
		t.Fatalf("retried join: %v, uses %d", err, f.spec.Tokens["k"].Uses)
	}
	if err := joinKey("kd", "key2"); !errors.Is(err, ErrTokenUsedUp) && !errors.Is(err, ErrNameTaken) {
		t.Fatalf("another key under the same name: %v", err)
	}
	apply(&Command{Op: OpCreateToken, Token: &JoinToken{ID: "many", Hash: "h2", Role: "sensor"}})
	if err := join("many", "h2", "a", "sensor", now); !errors.Is(err, ErrNameTaken) {
		t.Errorf("duplicate name: %v", err)
	}
	apply(&Command{Op: OpRemoveDevice, ID: "a"})
	if err := join("many", "h2", "a", "sensor", now); !errors.Is(err, ErrEvicted) {
		t.Errorf("evicted name: %v", err)
	}
}

type memSink struct{ b []byte }

func (m *memSink) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }
func (m *memSink) Close() error                { return nil }
func (m *memSink) ID() string                  { return "mem" }
func (m *memSink) Cancel() error               { return nil }
func (m *memSink) reader() *readCloser         { return &readCloser{b: m.b} }

type readCloser struct {
	b []byte
	i int
}

func (r *readCloser) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}
func (r *readCloser) Close() error { return nil }

// Concurrent writes are batched into shared Raft entries, and each still
// gets its own outcome: the refused ones their reason, the others their
// index, and every accepted one is in the spec.
func TestApplyBatchesConcurrentWrites(t *testing.T) {
	s := openTest(t, t.TempDir(), true)
	if _, err := s.Apply(context.Background(), initCmd()); err != nil {
		t.Fatal(err)
	}
	const n = 200
	type out struct {
		idx uint64
		err error
	}
	res := make([]out, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &Command{Op: OpCreateToken, Token: &JoinToken{ID: fmt.Sprintf("t%d", i), Hash: "h", Role: "sensor"}}
			if i%10 == 0 {
				c = &Command{Op: OpRevokeToken, ID: fmt.Sprintf("nope%d", i)}
			}
			idx, err := s.Apply(context.Background(), c)
			res[i] = out{idx, err}
		}()
	}
	wg.Wait()
	indexes := map[uint64]bool{}
	for i, r := range res {
		if i%10 == 0 {
			if !errors.Is(r.err, ErrTokenUnknown) {
				t.Fatalf("write %d: want ErrTokenUnknown, got %v", i, r.err)
			}
			continue
		}
		if r.err != nil || r.idx == 0 {
			t.Fatalf("write %d: index %d, err %v", i, r.idx, r.err)
		}
		indexes[r.idx] = true
		found := false
		s.View(func(sp *Spec) { _, found = sp.Tokens[fmt.Sprintf("t%d", i)] })
		if !found {
			t.Fatalf("token t%d acknowledged at index %d but not in the spec", i, r.idx)
		}
	}
	if len(indexes) >= n-n/10 {
		t.Fatalf("%d accepted writes took %d Raft entries: none were batched", n-n/10, len(indexes))
	}
	t.Logf("%d writes in %d Raft entries", n, len(indexes))
}

// A store listening on every address advertises AdvertiseHost with the port
// it got: 0.0.0.0 is not an address another gateway can dial.
func TestUnspecifiedBindAdvertisesHost(t *testing.T) {
	srv, cli := testTLS(t)
	s, err := Open(Config{NodeID: "n1", Dir: t.TempDir(), Bind: "0.0.0.0:0", AdvertiseHost: "127.0.0.1", ServerTLS: srv, ClientTLS: cli, Bootstrap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	host, port, _ := net.SplitHostPort(s.Addr())
	if host != "127.0.0.1" || port == "0" {
		t.Fatalf("advertised %s; want 127.0.0.1 and the bound port", s.Addr())
	}
}

// A second store on the same data dir (another process with the file)
// fails with an error that says so, rather than waiting forever for
// raft.db's lock; the first keeps working.
func TestSecondStoreOnSameDirFails(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, true)
	defer s.Close()
	srv, cli := testTLS(t)
	_, err := Open(Config{NodeID: "n1", Dir: dir, Bind: "127.0.0.1:0", ServerTLS: srv, ClientTLS: cli})
	if err == nil || !strings.Contains(err.Error(), "raft.db") || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second store on %s: %v; want an error naming raft.db and its lock", dir, err)
	}
	if !s.IsLeader() {
		t.Fatal("the first store lost leadership")
	}
}

// Pruning removes exactly the listed tokens that expired TokenRetention or
// more before the command's time, used up and revoked ones too; it leaves
// younger ones, tokens without expiry and tokens it was not given, and
// decides by the command's time alone.
func TestPruneTokensKeepsRetention(t *testing.T) {
	f := newFSM()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if err := applyCmd(t, f, 1, initCmd()); err != nil {
		t.Fatal(err)
	}
	toks := []*JoinToken{
		{ID: "old", Expires: now.Add(-TokenRetention - time.Hour)},
		{ID: "old-revoked", Expires: now.Add(-TokenRetention - time.Hour), Revoked: true},
		{ID: "old-used-up", Expires: now.Add(-TokenRetention), MaxUses: 1, Uses: 1},
		{ID: "recent", Expires: now.Add(-TokenRetention + time.Minute)},
		{ID: "live", Expires: now.Add(time.Hour)},
		{ID: "no-expiry"},
		{ID: "old-unlisted", Expires: now.Add(-TokenRetention - time.Hour)},
	}
	idx := uint64(1)
	for _, tk := range toks {
		tk.Hash, tk.Role = "h", "sensor"
		idx++
		if err := applyCmd(t, f, idx, &Command{Op: OpCreateToken, Time: now, Token: tk}); err != nil {
			t.Fatal(err)
		}
	}
	idx++
	err := applyCmd(t, f, idx, &Command{Op: OpPruneTokens, Time: now,
		IDs: []string{"old", "old-revoked", "old-used-up", "recent", "live", "no-expiry", "missing"}})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for id := range f.spec.Tokens {
		left = append(left, id)
	}
	slices.Sort(left)
	if want := []string{"live", "no-expiry", "old-unlisted", "recent"}; !slices.Equal(left, want) {
		t.Fatalf("tokens left: %v, want %v", left, want)
	}
	if f.spec.Version != idx {
		t.Fatalf("spec version %d after the prune at %d", f.spec.Version, idx)
	}
}

// A store rolled back to an older FSM stops at the first log entry it
// cannot apply (its spec is the fleet's at an older version, never a
// different one) and takes no snapshot, so a newer binary later applies the
// rest; a snapshot holding newer commands is refused at start with the
// reason.
func TestOlderFSMHaltsAtNewerCommand(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	now := time.Now().UTC()
	s := openTest(t, dir, true)
	if _, err := s.Apply(ctx, initCmd()); err != nil {
		t.Fatal(err)
	}
	old := &JoinToken{ID: "old", Hash: "h", Role: "sensor", Expires: now.Add(-TokenRetention - time.Hour)}
	if _, err := s.Apply(ctx, &Command{Op: OpCreateToken, Token: old}); err != nil {
		t.Fatal(err)
	}
	before := s.Version()
	if err := s.Snapshot(); err != nil { // one snapshot of level 0 commands only
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, &Command{Op: OpPruneTokens, IDs: []string{"old"}}); err != nil {
		t.Fatal(err)
	}
	tok := &JoinToken{ID: "new", Hash: "h", Role: "sensor", Expires: now.Add(time.Hour)}
	if _, err := s.Apply(ctx, &Command{Op: OpCreateToken, Token: tok}); err != nil {
		t.Fatal(err)
	}
	if lv := s.Spec().Level; lv != OpLevel(OpPruneTokens) {
		t.Fatalf("spec level %d after a prune, want %d (Store.Apply stamps each command's level)", lv, OpLevel(OpPruneTokens))
	}
	want, wantVersion, _ := s.SpecJSON()
	s.Close()

	reopen := func(oldFSM bool) (*Store, error) {
		srv, cli := testTLS(t)
		return Open(Config{NodeID: "n1", Dir: dir, Bind: "127.0.0.1:0", ServerTLS: srv, ClientTLS: cli, OldFSM: oldFSM})
	}
	s2, err := reopen(true)
	if err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 10*time.Second, func() error {
		if !errors.Is(s2.Halted(), ErrFSMTooOld) {
			return fmt.Errorf("not halted yet (spec version %d)", s2.Version())
		}
		return nil
	})
	if v := s2.Version(); v != before {
		t.Errorf("halted at spec version %d, want %d (the entry before the prune)", v, before)
	}
	sp := s2.Spec()
	if sp.Tokens["old"] == nil || sp.Tokens["new"] != nil {
		t.Errorf("halted spec has tokens %v: want the old one (not pruned) and not the new one (after the halt)", sp.Tokens)
	}
	if err := s2.Snapshot(); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("snapshot of a halted store: %v; want it refused as too old (Raft could drop the entries it skipped)", err)
	}
	last := s2.LastIndex()
	if _, err := s2.Apply(ctx, &Command{Op: OpCreateToken, Token: &JoinToken{ID: "x", Hash: "h", Role: "sensor"}}); !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrFSMTooOld) {
		t.Errorf("write on a halted leader: %v, want it refused as not leader, too old", err)
	}
	if s2.LastIndex() != last {
		t.Error("a halted leader proposed a write")
	}
	s2.Close()

	s3, err := reopen(false)
	if err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, 10*time.Second, func() error {
		if got, v, _ := s3.SpecJSON(); v != wantVersion || string(got) != string(want) {
			return fmt.Errorf("upgraded store at version %d, want %d and the same spec", v, wantVersion)
		}
		return nil
	})
	if s3.Halted() != nil {
		t.Errorf("upgraded store halted: %v", s3.Halted())
	}
	if err := s3.Snapshot(); err != nil {
		t.Fatal(err)
	}
	s3.Close()

	// Now the newer commands are in the newest snapshot (an older one of
	// level 0 is there too, which raft alone would fall back to): the older
	// binary cannot even start, and says why.
	if s4, err := reopen(true); err == nil {
		s4.Close()
		t.Fatal("an older FSM started on a snapshot holding newer commands")
	} else if !errors.Is(err, ErrFSMTooOld) {
		t.Errorf("start on a newer snapshot: %v, want ErrFSMTooOld", err)
	}
}

// The halt inside a batch entry: the commands before the too-new one apply,
// it and every one after do not; a snapshot restore (the whole state at an
// index, from an FSM that applied everything) lifts the halt.
func TestOlderFSMHaltsInsideBatch(t *testing.T) {
	f := newFSM()
	f.level = FSMLevel - 1
	apply := func(i uint64, cs ...*Command) []Result {
		b, _ := json.Marshal(cs)
		return f.Apply(&raft.Log{Index: i, Type: raft.LogCommand, Data: b}).([]Result)
	}
	apply(1, initCmd())
	tok := func(id string) *Command {
		return &Command{Op: OpCreateToken, Token: &JoinToken{ID: id, Hash: "h", Role: "sensor"}}
	}
	rs := apply(2, tok("a"), &Command{Op: "future_op", Level: FSMLevel}, tok("b"))
	if rs[0].Err != nil || !errors.Is(rs[1].Err, ErrFSMTooOld) || !errors.Is(rs[2].Err, ErrFSMTooOld) {
		t.Fatalf("batch results %v: want ok, then too old for the newer command and the one after", rs)
	}
	if rs := apply(3, tok("c")); !errors.Is(rs[0].Err, ErrFSMTooOld) {
		t.Fatalf("after the halt: %v, want ErrFSMTooOld", rs[0].Err)
	}
	if f.spec.Version != 2 || f.spec.Tokens["a"] == nil || f.spec.Tokens["b"] != nil || f.spec.Tokens["c"] != nil {
		t.Fatalf("halted spec at version %d with tokens %v: want version 2 with a only", f.spec.Version, f.spec.Tokens)
	}

	g := newFSM() // a newer FSM's state at a later index, level 0 commands only
	for i, c := range []*Command{initCmd(), tok("a"), tok("b"), tok("c")} {
		b, _ := json.Marshal(c)
		g.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b})
	}
	snap, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	snap.Persist(sink)
	if err := f.Restore(sink.reader()); err != nil {
		t.Fatal(err)
	}
	if f.halted != nil || f.spec.Version != 4 {
		t.Fatalf("after a restore: halted %v, version %d; want running at 4", f.halted, f.spec.Version)
	}
}

// A consistent read's barrier on a leader that loses its followers ends when
// the store closes: a node's stop waits for its requests, so a barrier that
// raft leaves unanswered must not hold the stop up.
func TestBarrierEndsWhenStoreCloses(t *testing.T) {
	srv, cli := testTLS(t)
	var cut atomic.Bool
	hook := func(string) error {
		if cut.Load() {
			return errors.New("cut off")
		}
		return nil
	}
	var stores []*Store
	for i := range 3 {
		s, err := Open(Config{NodeID: fmt.Sprintf("n%d", i+1), Dir: t.TempDir(), Bind: "127.0.0.1:0", ServerTLS: srv, ClientTLS: cli, Bootstrap: i == 0,
			Dial: hook, HeartbeatTimeout: 5 * time.Second, ElectionTimeout: 5 * time.Second, LeaderLeaseTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	wait.Eventually(t, 30*time.Second, func() error {
		if !stores[0].IsLeader() {
			return errors.New("n1 is not leader yet")
		}
		return nil
	})
	ctx := context.Background()
	if _, err := stores[0].Apply(ctx, initCmd()); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores[1:] {
		if _, err := stores[0].AddGateway(s.cfg.NodeID, s.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	cut.Store(true) // n1 can no longer reach anyone: no verify can succeed
	done := make(chan error, 1)
	go func() { done <- stores[0].Barrier(time.Minute) }()
	stores[0].Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a barrier on a closed, cut-off leader succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the barrier did not end within 20 s of the store's close")
	}
}
