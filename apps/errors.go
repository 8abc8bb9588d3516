package apps

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors of the package; wrap them with %w and test with errors.Is.
var (
	// ErrInvalidManifest is wrapped by every parse and validation failure.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrNotOwned means a resource with the name fleetmesh wants exists
	// but carries no fleetmesh ownership marks; fleetmesh leaves it alone.
	ErrNotOwned = errors.New("exists but is not managed by fleetmesh")
	// ErrUnsupported means a driver cannot do what the manifest asks.
	ErrUnsupported = errors.New("not supported")
	// ErrImageUnavailable means an image could neither be pulled nor found
	// on the device.
	ErrImageUnavailable = errors.New("image unavailable")
)

// FieldError is one problem with one field, named by its path in the
// manifest: `spec.deployment.ports[1]: "80:x": container port is not a number`.
type FieldError struct {
	Field  string
	Detail string
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Detail
	}
	return e.Field + ": " + e.Detail
}

// FieldErrors collects problems so that all of them are reported at once.
type FieldErrors []FieldError

func (es *FieldErrors) add(field, format string, args ...any) {
	*es = append(*es, FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// ValidationError is every problem found in one manifest.
type ValidationError struct {
	// Name is the manifest's metadata.name when it has one.
	Name   string
	Errors FieldErrors
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalidManifest.Error())
	if e.Name != "" {
		b.WriteString(" " + strconv.Quote(e.Name))
	}
	if len(e.Errors) == 1 {
		b.WriteString(": " + e.Errors[0].Error())
		return b.String()
	}
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(len(e.Errors)))
	b.WriteString(" problems:")
	for _, fe := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalidManifest) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalidManifest }
