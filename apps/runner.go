package apps

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs a host command for the snap, systemd and kubernetes drivers,
// returning its combined output. Tests inject a fake; ExecRunner is the
// real one.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run implements Runner. The error says which command failed and carries
// its output; errors.As to an ExitCoder gives the exit status.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, &CommandError{Cmd: append([]string{name}, args...), Output: strings.TrimSpace(string(out)), Err: err}
	}
	return out, nil
}

// CommandError is a host command that failed.
type CommandError struct {
	Cmd    []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: %v", strings.Join(e.Cmd, " "), e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// ExitCoder is an error that carries a process exit status, as
// *exec.ExitError does.
type ExitCoder interface {
	ExitCode() int
}

// exitStatus turns a Runner error into an exit status: 0 for nil, the
// status for a command that ran and failed, and an error otherwise.
func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ec ExitCoder
	if errors.As(err, &ec) && ec.ExitCode() > 0 {
		return ec.ExitCode(), nil
	}
	return -1, err
}
