// Package wait holds the bounded polling helpers of the tests. It imports
// nothing of fleetmesh, so every package's own tests can use it; testenv
// re-exports it.
package wait

import (
	"fmt"
	"time"
)

// TB is the part of testing.TB that Eventually needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually calls f until it returns nil or timeout passes, polling with a
// short backoff. When it gives up it fails the test with f's last error, so a
// failure says what was still wrong rather than just "timed out".
func Eventually(t TB, timeout time.Duration, f func() error) {
	t.Helper()
	if err := Poll(timeout, f); err != nil {
		t.Fatalf("%v", err)
	}
}

// Poll is Eventually for code that is not a test: it returns an error that
// wraps f's last error after timeout.
func Poll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	var last error
	for {
		if last = f(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", timeout, last)
		}
		timer := time.NewTimer(wait)
		<-timer.C
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}
