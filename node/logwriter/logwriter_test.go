package logwriter

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLevelsAndRateLimit(t *testing.T) {
	var buf bytes.Buffer
	w := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w.now = func() time.Time { return now }

	w.Write([]byte("2026/01/01 [WARN] memberlist: failed to reach 10.0.0.1:7946\n"))
	for i := 0; i < 50; i++ {
		w.Write([]byte("[WARN] memberlist: failed to reach 10.0.0.1:7946\n"))
	}
	w.Write([]byte("[ERR] raft: something else\n"))
	now = now.Add(RepeatInterval)
	w.Write([]byte("[WARN] memberlist: failed to reach 10.0.0.2:7946\n"))

	out := buf.String()
	if got := strings.Count(out, "failed to reach"); got != 2 {
		t.Fatalf("repeated line logged %d times, want 2:\n%s", got, out)
	}
	if !strings.Contains(out, "repeats_suppressed=50") {
		t.Errorf("the count of suppressed repeats is missing:\n%s", out)
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "level=WARN") {
		t.Errorf("levels not mapped:\n%s", out)
	}
}
