package node

import (
	"fmt"
	"testing"
	"time"
)

func TestJoinLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	fail := func(ip string) time.Duration {
		settle, wait := l.admit(ip)
		if settle != nil {
			settle(true)
		}
		return wait
	}
	for i := range joinFailBurst {
		if d := fail("10.0.0.1"); d != 0 {
			t.Fatalf("after %d failures: wait %v, want 0 (the burst is %d)", i, d, joinFailBurst)
		}
	}
	if d := fail("10.0.0.1"); d != joinFailEvery {
		t.Errorf("after the burst: wait %v, want %v", d, joinFailEvery)
	}
	if d := fail("10.0.0.2"); d != 0 {
		t.Errorf("another source: wait %v, want 0", d)
	}
	now = now.Add(joinFailEvery / 2)
	if _, d := l.admit("10.0.0.1"); d != joinFailEvery/2 {
		t.Errorf("half-way: wait %v, want %v", d, joinFailEvery/2)
	}
	now = now.Add(joinFailEvery / 2)
	settle, d := l.admit("10.0.0.1")
	if settle == nil {
		t.Fatalf("after %v: wait %v, want to be heard", joinFailEvery, d)
	}
	settle(false) // a success gives its place back
	if settle, _ := l.admit("10.0.0.1"); settle == nil {
		t.Error("a success used up the budget")
	}
}

// Joins being heard count until they succeed: many at once from one source
// cannot all pass before the first failure counts.
func TestJoinLimiterCountsJoinsInFlight(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	var held []func(bool)
	for range joinFailBurst {
		settle, _ := l.admit("10.0.0.1")
		if settle == nil {
			t.Fatal("throttled within the burst")
		}
		held = append(held, settle)
	}
	if settle, _ := l.admit("10.0.0.1"); settle != nil {
		t.Fatal("an attempt beyond the burst was heard while the others were still in flight")
	}
	for _, settle := range held {
		settle(false)
	}
	if settle, _ := l.admit("10.0.0.1"); settle == nil {
		t.Fatal("throttled after every join in flight succeeded")
	}
}

// An IPv6 host is one source across its /64.
func TestJoinLimiterIPv6Prefix(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	for i := range joinFailBurst {
		settle, _ := l.admit(fmt.Sprintf("2001:db8:1:2::%x", i+1))
		settle(true)
	}
	if settle, _ := l.admit("2001:db8:1:2:ffff::1"); settle != nil {
		t.Error("another address of the same /64 was heard after the burst")
	}
	if settle, _ := l.admit("2001:db8:1:3::1"); settle == nil {
		t.Error("another /64 was throttled")
	}
}

// The table of sources stays bounded: idle sources are forgotten first,
// else the one idle longest (a source that keeps trying is never idle, so
// it stays throttled).
func TestJoinLimiterBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newJoinLimiter(func() time.Time { return now })
	for range joinFailBurst { // throttle one source
		settle, _ := l.admit("10.9.9.9")
		settle(true)
	}
	for i := range joinLimitSources - 1 {
		now = now.Add(time.Millisecond)
		settle, _ := l.admit(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
		settle(true)
	}
	now = now.Add(time.Millisecond)
	settle, _ := l.admit("10.2.0.1") // full: the one idle longest goes
	settle(true)
	if len(l.sources) != joinLimitSources {
		t.Fatalf("%d sources, want %d", len(l.sources), joinLimitSources)
	}
	if l.sources["10.9.9.9"] != nil {
		t.Error("the source idle longest was kept")
	}
	if l.sources["10.1.0.1"] == nil || l.sources["10.2.0.1"] == nil {
		t.Error("a recent source was dropped")
	}
	now = now.Add(2 * joinLimitMaxAge)
	settle, _ = l.admit("10.4.0.1")
	settle(true)
	if len(l.sources) != 1 {
		t.Fatalf("%d sources after the idle ones were swept, want only the new one", len(l.sources))
	}
}
