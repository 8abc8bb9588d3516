// Package apps runs the fleet's applications on one device: EdgeApplication
// manifests (parsing, validation with field paths, templates), the drivers
// that run them (Docker containers through the Engine API; systemd units,
// snaps and Kubernetes Deployments through the host's tools), and the
// Reconciler that converges the device to the desired set, repairs drift,
// runs health checks and keeps the last applied set on disk for offline
// restarts.
//
// It never touches anything it does not own (see DESIGN.md), and it does not
// own the spec: the node agent passes the desired set in with SetDesired and
// gossips what Status reports.
package apps
