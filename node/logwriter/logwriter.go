// Package logwriter adapts libraries that log text lines (memberlist's
// *log.Logger, raft's hclog) into one *slog.Logger: each line becomes a
// record at the level its "[LEVEL]" tag names. Lines that repeat (a peer
// that stays unreachable makes memberlist and raft say the same thing many
// times a second) are rate-limited, because a Pi logs to an SD card. It must
// stay free of other fleetmesh imports, since mesh and consensus both use it.
package logwriter

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
)

// RepeatInterval is how often the same message is let through.
const RepeatInterval = 10 * time.Second

// maxTracked bounds the memory of the rate limiter.
const maxTracked = 512

// Writer is an io.Writer that forwards each line to a slog.Logger.
type Writer struct {
	l   *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	seen map[string]*seenLine
}

type seenLine struct {
	last       time.Time
	suppressed int
}

// New returns a Writer logging to l.
func New(l *slog.Logger) *Writer {
	return &Writer{l: l, now: time.Now, seen: map[string]*seenLine{}}
}

var levels = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", slog.LevelDebug - 4}, {"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError},
}

// numbers are left out when deciding whether a line repeats another
// (ports, counters and durations change while the message stays the same).
var numbers = regexp.MustCompile(`[0-9]+`)

// Write logs p, one record per line.
func (w *Writer) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := slog.LevelInfo
		for _, lv := range levels {
			if i := strings.Index(s, lv.tag); i >= 0 {
				level = lv.level
				s = strings.TrimSpace(s[i+len(lv.tag):])
				break
			}
		}
		if !w.l.Enabled(context.Background(), level) {
			continue
		}
		allow, suppressed := w.admit(s)
		if !allow {
			continue
		}
		if suppressed > 0 {
			w.l.Log(context.Background(), level, s, "repeats_suppressed", suppressed)
		} else {
			w.l.Log(context.Background(), level, s)
		}
	}
	return len(p), nil
}

// admit says whether s may be logged now, and how many repeats of it were
// dropped since it last was.
func (w *Writer) admit(s string) (bool, int) {
	key := numbers.ReplaceAllString(s, "#")
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.seen[key]; ok {
		if now.Sub(e.last) < RepeatInterval {
			e.suppressed++
			return false, 0
		}
		n := e.suppressed
		e.last, e.suppressed = now, 0
		return true, n
	}
	if len(w.seen) >= maxTracked {
		for k, e := range w.seen {
			if now.Sub(e.last) >= RepeatInterval {
				delete(w.seen, k)
			}
		}
		if len(w.seen) >= maxTracked {
			w.seen = map[string]*seenLine{}
		}
	}
	w.seen[key] = &seenLine{last: now}
	return true, 0
}
