package node

import (
	"fmt"
	"testing"
	"time"
)

func TestJoinLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	for i := range joinFailBurst {
		if d := l.wait("10.0.0.1"); d != 0 {
			t.Fatalf("after %d failures: wait %v, want 0 (the burst is %d)", i, d, joinFailBurst)
		}
		l.failed("10.0.0.1")
	}
	if d := l.wait("10.0.0.1"); d != joinFailEvery {
		t.Errorf("after the burst: wait %v, want %v", d, joinFailEvery)
	}
	if d := l.wait("10.0.0.2"); d != 0 {
		t.Errorf("another source: wait %v, want 0", d)
	}
	now = now.Add(joinFailEvery / 2)
	if d := l.wait("10.0.0.1"); d != joinFailEvery/2 {
		t.Errorf("half-way: wait %v, want %v", d, joinFailEvery/2)
	}
	now = now.Add(joinFailEvery / 2)
	if d := l.wait("10.0.0.1"); d != 0 {
		t.Errorf("after %v: wait %v, want 0", joinFailEvery, d)
	}
}

// The table of sources stays bounded: idle sources are forgotten first,
// and a table full of sources failing right now starts over.
func TestJoinLimiterBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	for i := range joinLimitSweep {
		l.failed(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	now = now.Add(joinLimitMaxAge / 2)
	l.failed("10.2.0.1") // a sweep: all are recent, so the table starts over
	if len(l.sources) != 1 {
		t.Fatalf("%d sources after a sweep of a full, busy table, want 1", len(l.sources))
	}
	for i := range joinLimitSweep - 1 {
		l.failed(fmt.Sprintf("10.3.%d.%d", i/256, i%256))
	}
	now = now.Add(2 * joinLimitMaxAge)
	l.failed("10.4.0.1")
	l.failed("10.4.0.1")
	if len(l.sources) != 1 || l.sources["10.4.0.1"] == nil {
		t.Fatalf("%d sources after the idle ones were swept, want only the new one", len(l.sources))
	}
}
