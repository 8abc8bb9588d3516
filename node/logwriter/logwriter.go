// Package logwriter adapts libraries that log text lines (memberlist's
// *log.Logger, raft's hclog) into one *slog.Logger: each line becomes a
// record at the level its "[LEVEL]" tag names. It must stay free of other
// fleetmesh imports, since mesh and consensus both use it.
package logwriter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
)

// Writer is an io.Writer that forwards each line to a slog.Logger.
type Writer struct {
	l *slog.Logger
}

// New returns a Writer logging to l.
func New(l *slog.Logger) *Writer { return &Writer{l: l} }

// Write logs p, one record per line.
func (w *Writer) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := slog.LevelInfo
		for tag, lv := range map[string]slog.Level{"[TRACE]": slog.LevelDebug - 4, "[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError} {
			if i := strings.Index(s, tag); i >= 0 {
				level = lv
				s = strings.TrimSpace(s[i+len(tag):])
				break
			}
		}
		w.l.Log(context.Background(), level, s)
	}
	return len(p), nil
}
