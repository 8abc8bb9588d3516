package testenv

import (
	"time"

	"github.com/fleetmesh/fleetmesh/testenv/wait"
)

// TB is the part of testing.TB that Eventually needs.
type TB = wait.TB

// Eventually calls f until it returns nil or timeout passes; on timeout it
// fails the test with f's last error.
func Eventually(t TB, timeout time.Duration, f func() error) {
	t.Helper()
	wait.Eventually(t, timeout, f)
}

// Poll is Eventually for code that is not a test.
func Poll(timeout time.Duration, f func() error) error { return wait.Poll(timeout, f) }
