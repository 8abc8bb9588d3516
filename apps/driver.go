package apps

import "context"

// State is where an application stands on one device.
type State string

// The states an application goes through on a device.
const (
	StatePending   State = "pending"   // desired, not yet acted on
	StatePulling   State = "pulling"   // fetching the image or package
	StateStarting  State = "starting"  // created; running but not yet healthy
	StateRunning   State = "running"   // running, and it has no health check
	StateHealthy   State = "healthy"   // running and passing its health check
	StateUnhealthy State = "unhealthy" // running and failing its health check
	StateFailed    State = "failed"    // could not be run; Message says why
)

// Failing reports whether the state means the device needs attention.
func (s State) Failing() bool { return s == StateFailed || s == StateUnhealthy }

// Status is a state with a human-readable reason.
type Status struct {
	State   State  `json:"state"`
	Message string `json:"message,omitempty"`
}

// Observed is an application a driver finds on the device, read back from
// the ownership marks it left (labels, unit file keys, its state file).
type Observed struct {
	App     string
	Version string
	// Hash is the Instance.Hash the application was created from.
	Hash   string
	Status Status
}

// Driver runs applications of one deployment type on this device. The
// reconciler is its only caller and serialises the calls; a driver only ever
// sees and touches what it created for this node.
type Driver interface {
	// Ensure makes inst run: create it when missing, replace it when its
	// Hash differs from the one running, start it when it stopped, and do
	// nothing when it already runs as specified. progress, when not nil, is
	// told of intermediate states (pulling, starting). The returned Status
	// is the state after the call; a non-nil error comes with StateFailed.
	Ensure(ctx context.Context, inst Instance, progress func(Status)) (Status, error)
	// Remove stops and deletes the application; removing one that is not
	// there is not an error.
	Remove(ctx context.Context, app string) error
	// List returns every application this driver runs for this node.
	List(ctx context.Context) ([]Observed, error)
}

// Prober is implemented by drivers that can say where an application
// listens and run a command inside it, for the agent's health checks.
type Prober interface {
	// Endpoint returns the host:port at which the application's port
	// (as declared in the manifest) can be reached from the agent.
	Endpoint(ctx context.Context, app string, port int) (string, error)
	// Exec runs cmd inside the application and returns its exit status.
	Exec(ctx context.Context, app string, cmd []string) (int, error)
}
