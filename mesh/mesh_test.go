package mesh

import "testing"

// A node's own record that comes back to it through gossip (peers rebroadcast
// what is news to them) must not count as news: if it bumped Seq, the bumped
// record would be news to every peer again, and every record would circle
// the mesh forever, filling each gossip packet.
func TestOwnRecordEchoIsNotNews(t *testing.T) {
	m, err := New(Config{Bind: "127.0.0.1:0"}, Identity{Name: "a", Role: "sensor"}, Health{State: StateReady})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	d := &delegate{m}
	m.mu.RLock()
	rec := m.local
	m.mu.RUnlock()
	queued := m.queue.NumQueued()

	d.NotifyMsg(append([]byte{msgRecord}, rec.encode()...))
	m.mu.RLock()
	seq := m.local.Seq
	m.mu.RUnlock()
	if seq != rec.Seq {
		t.Errorf("own record echoed back: Seq went from %d to %d", rec.Seq, seq)
	}
	if n := m.queue.NumQueued(); n != queued {
		t.Errorf("own record echoed back: %d broadcasts queued, want %d", n, queued)
	}

	// A record of us with a higher Seq than ours (held by a peer from before
	// a restart when the clock went back) is still overridden.
	newer := rec
	newer.Seq = rec.Seq + 10
	d.NotifyMsg(append([]byte{msgRecord}, newer.encode()...))
	m.mu.RLock()
	seq = m.local.Seq
	m.mu.RUnlock()
	if seq <= newer.Seq {
		t.Errorf("stale record of us with Seq %d: ours is %d, want it higher", newer.Seq, seq)
	}
	if n := m.queue.NumQueued(); n <= queued {
		t.Errorf("stale record of us: our record was not rebroadcast")
	}
}
