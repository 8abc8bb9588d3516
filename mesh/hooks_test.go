package mesh

import (
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist calls the delegate and event hooks as soon as Create starts
// handling packets, before New has the *Memberlist: a node restarted at its
// old address hears its peers at once (their gossip, push/pulls, and the
// old incarnation's record of itself). Every hook must work on the Mesh as
// it is then. A hook that read m.ml crashed the agent with a nil pointer
// dereference on such a restart; here it would panic at once rather than
// only when a packet happens to land in that window.
func TestHooksWorkBeforeMemberlistIsUp(t *testing.T) {
	m := newMesh(Config{RetransmitMult: DefaultRetransmitMult}, Identity{Name: "a", Role: "gateway", API: "127.0.0.1:7400"}, Health{State: StateReady})
	if m.ml != nil {
		t.Fatal("newMesh must not need memberlist")
	}
	d, e := &delegate{m}, &events{m}
	msg := func(r Record) []byte { return recordMsg(&r) }
	node := func(name string, state memberlist.NodeStateType) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.ParseIP("127.0.0.1"), Port: 7946, State: state}
	}

	// memberlist announces this node to itself during Create.
	e.NotifyJoin(node("a", memberlist.StateAlive))
	// A peer's record, gossiped and pushed.
	peer := Record{Identity: Identity{Name: "b", Role: "sensor", API: "127.0.0.2:7400"}, Health: Health{State: StateReady, SpecVersion: 3}, Seq: 1}
	d.NotifyMsg(msg(peer))
	e.NotifyJoin(node("b", memberlist.StateAlive))
	// The previous incarnation's record of this node, with a higher Seq
	// (clock stepped back across the restart).
	old := m.local
	old.Seq += 1000
	d.NotifyMsg(msg(old))
	d.NotifyMsg([]byte{msgRecord, '{'})     // torn
	d.NotifyMsg([]byte{msgRecordJSON, '{'}) // torn, from an old agent
	d.NotifyMsg(nil)
	peer.Seq, peer.Health.SpecVersion = 2, 4
	state, _ := json.Marshal([]Record{peer, {Identity: Identity{Name: "c"}, Seq: 1}})
	d.MergeRemoteState(state, true)
	d.MergeRemoteState([]byte("not json"), false)
	_ = d.LocalState(true)
	_ = d.GetBroadcasts(2, 1400)
	_ = d.NodeMeta(512)
	e.NotifyUpdate(node("b", memberlist.StateAlive))
	e.NotifyLeave(node("c", memberlist.StateDead))

	if m.local.Seq <= old.Seq {
		t.Errorf("this node's Seq %d does not pass its old incarnation's %d", m.local.Seq, old.Seq)
	}
	b, ok := m.Member("b")
	if !ok || !b.Alive || b.Health.SpecVersion != 4 || b.API != peer.API {
		t.Errorf("peer b: %+v, %v; want alive with spec 4 and its API", b, ok)
	}
	if c, ok := m.Member("c"); !ok || c.Alive || c.OfflineReason == "" {
		t.Errorf("peer c: %+v, %v; want known, offline with a reason", c, ok)
	}
}

// In a small fleet memberlist's suspicion (SuspicionMult × log10 N × probe
// interval) is shorter than the suspicion floor; a failed verdict then
// waits out the difference, and news that the member is alive (its
// refutation) cancels it. A graceful leave, and a failure in a fleet large
// enough that memberlist's own suspicion covers the floor, show at once.
func TestFailedVerdictWaitsForSuspicionFloor(t *testing.T) {
	cfg := Config{RetransmitMult: DefaultRetransmitMult, ProbeInterval: 100 * time.Millisecond, SuspicionMult: 3, SuspicionFloor: 600 * time.Millisecond}
	m := newMesh(cfg, Identity{Name: "a", Role: "gateway", API: "127.0.0.1:7400"}, Health{State: StateReady})
	type call struct {
		d time.Duration
		f func()
	}
	var calls []call
	m.after = func(d time.Duration, f func()) { calls = append(calls, call{d, f}) }
	e := &events{m}
	node := func(name string, state memberlist.NodeStateType) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.ParseIP("127.0.0.1"), Port: 7946, State: state}
	}
	alive := func(name string) bool { mb, _ := m.Member(name); return mb.Alive }
	for _, n := range []string{"a", "b", "c", "d"} {
		e.NotifyJoin(node(n, memberlist.StateAlive))
	}

	// 4 members: memberlist suspects for 3 × 1 × 100 ms; 300 ms to go.
	e.NotifyLeave(node("b", memberlist.StateDead))
	if len(calls) != 1 || calls[0].d != 300*time.Millisecond {
		t.Fatalf("held verdicts %v; want one, after 300ms", calls)
	}
	if !alive("b") {
		t.Fatal("b offline before the suspicion floor")
	}
	e.NotifyJoin(node("b", memberlist.StateAlive)) // b refuted
	calls[0].f()
	if !alive("b") {
		t.Fatal("a refuted verdict still marked b offline")
	}

	e.NotifyLeave(node("b", memberlist.StateDead))
	calls[1].f()
	if b, _ := m.Member("b"); b.Alive || b.OfflineReason != "failed: no response to probes" {
		t.Fatalf("b after the floor: %+v; want offline, failed", b)
	}

	e.NotifyLeave(node("c", memberlist.StateLeft))
	if c, _ := m.Member("c"); c.Alive || c.OfflineReason != "left" || len(calls) != 2 {
		t.Fatalf("c left: %+v (%d verdicts held); want offline at once", c, len(calls))
	}

	m.numNodes.Store(100) // 3 × 2 × 100 ms: memberlist's suspicion covers the floor
	e.NotifyLeave(node("d", memberlist.StateDead))
	if alive("d") || len(calls) != 2 {
		t.Fatalf("d failed in a fleet of 100: alive %v, %d verdicts held; want offline at once", alive("d"), len(calls))
	}
}

// A record message names its sender and Seq before the JSON: a copy of a
// record this node has is dropped unread, a header that disagrees with its
// body is refused, news is rebroadcast as it came, and an old agent's
// JSON-only record is still taken.
func TestRecordMessages(t *testing.T) {
	m := newMesh(Config{RetransmitMult: DefaultRetransmitMult}, Identity{Name: "a", Role: "gateway", API: "127.0.0.1:7400"}, Health{State: StateReady})
	d := &delegate{m}
	spec := func(name string) uint64 { mb, _ := m.Member(name); return mb.Health.SpecVersion }
	b := Record{Identity: Identity{Name: "b", Role: "sensor"}, Health: Health{State: StateReady, SpecVersion: 1}, Seq: 10}

	msg := recordMsg(&b)
	d.NotifyMsg(msg)
	if spec("b") != 1 || m.queue.NumQueued() != 1 {
		t.Fatalf("news: spec %d, %d queued; want 1 and a rebroadcast", spec("b"), m.queue.NumQueued())
	}
	out := m.queue.GetBroadcasts(0, 1<<16)
	if len(out) != 1 || !bytes.Equal(out[0], msg) {
		t.Fatalf("rebroadcast %q; want the message as it came", out)
	}

	// A copy with the same Seq is dropped by its header: what follows
	// does not matter.
	queued := m.queue.NumQueued()
	d.NotifyMsg(msg)
	d.NotifyMsg(append(bytes.Clone(msg[:10+len("b")]), "{not json"...))
	if spec("b") != 1 || m.queue.NumQueued() != queued {
		t.Fatalf("a copy was taken as news")
	}

	// A header that says one thing and a body that says another.
	liar := b
	liar.Seq, liar.Health.SpecVersion = 11, 2
	bad := recordMsg(&liar)
	bad[8]++ // Seq 12 in the header, 11 in the body
	d.NotifyMsg(bad)
	if spec("b") != 1 {
		t.Fatal("a record whose header disagrees with its body was taken")
	}

	// An old agent's record: JSON alone.
	liar.Seq = 13
	js, _ := json.Marshal(liar)
	d.NotifyMsg(append([]byte{msgRecordJSON}, js...))
	if spec("b") != 2 {
		t.Fatalf("old-format record: spec %d, want 2", spec("b"))
	}
	d.NotifyMsg([]byte{msgRecord, 0, 0, 0, 0, 0, 0, 0, 1, 200, 'x'}) // name longer than the message
	d.NotifyMsg([]byte{9, '{'})                                      // unknown type
}

// A copy of a record this node holds is dropped on its header, without
// decoding (no allocation); a newer record of a node replaces the older
// one in the broadcast queue.
func TestRecordCopiesCostNothingAndNewerReplacesQueued(t *testing.T) {
	m := newMesh(Config{RetransmitMult: DefaultRetransmitMult}, Identity{Name: "a", Role: "gateway"}, Health{State: StateReady})
	d := &delegate{m}
	b := Record{Identity: Identity{Name: "b", Role: "sensor"}, Health: Health{State: StateReady}, Seq: 10}
	msg := recordMsg(&b)
	d.NotifyMsg(msg)
	if allocs := testing.AllocsPerRun(100, func() { d.NotifyMsg(msg) }); allocs != 0 {
		t.Errorf("a copy of a held record cost %v allocations; want 0 (dropped on its header)", allocs)
	}
	b.Seq = 11
	d.NotifyMsg(recordMsg(&b))
	out := m.queue.GetBroadcasts(0, 1<<16)
	if m.queue.NumQueued() != 1 || len(out) != 1 || !bytes.Equal(out[0], recordMsg(&b)) {
		t.Fatalf("queue holds %d broadcasts (%d sent); want only b's record with Seq 11", m.queue.NumQueued(), len(out))
	}
}

// Records go out with their header only while every live peer reads it
// (memberlist's delegate protocol maximum); an agent from before the
// header gets JSON records, until it is gone.
func TestRecordFormatFollowsPeers(t *testing.T) {
	m := newMesh(Config{RetransmitMult: DefaultRetransmitMult}, Identity{Name: "a", Role: "gateway"}, Health{State: StateReady})
	e := &events{m}
	node := func(name string, dmax uint8, state memberlist.NodeStateType) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.ParseIP("127.0.0.1"), Port: 7946, State: state, DMax: dmax}
	}
	sent := func() byte {
		m.Update(Health{State: StateReady})
		for _, b := range m.queue.GetBroadcasts(0, 1<<16) {
			if bytes.Contains(b, []byte(`"name":"a"`)) {
				return b[0]
			}
		}
		t.Fatal("this node's record is not queued")
		return 0
	}
	e.NotifyJoin(node("a", protoRecordHeader, memberlist.StateAlive))
	e.NotifyJoin(node("new", protoRecordHeader, memberlist.StateAlive))
	if f := sent(); f != msgRecord {
		t.Fatalf("all peers read headers: sent format %d", f)
	}
	e.NotifyJoin(node("old", 0, memberlist.StateAlive))
	// A record of the old agent arriving must not lose what it reads.
	d := &delegate{m}
	d.NotifyMsg(append([]byte{msgRecordJSON}, (&Record{Identity: Identity{Name: "old"}, Seq: 5}).encode()...))
	if f := sent(); f != msgRecordJSON {
		t.Fatalf("an old agent is in the mesh: sent format %d", f)
	}
	e.NotifyUpdate(node("old", protoRecordHeader, memberlist.StateAlive)) // upgraded in place
	if f := sent(); f != msgRecord {
		t.Fatalf("the old agent upgraded: sent format %d", f)
	}
	e.NotifyUpdate(node("old", 0, memberlist.StateAlive))
	e.NotifyLeave(node("old", 0, memberlist.StateLeft))
	if f := sent(); f != msgRecord {
		t.Fatalf("the old agent left: sent format %d", f)
	}
}
