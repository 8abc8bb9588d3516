package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

func errorf(format string, a ...any) error { return fmt.Errorf(format, a...) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// logTo is a debug-level logger into w, for tests that grep the fleet's log.
func logTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
