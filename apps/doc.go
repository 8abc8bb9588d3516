// Package apps runs the fleet's applications on one device: EdgeApplication
// manifests, their validation, and the drivers (Docker containers, snaps,
// systemd units) that make the device run what the spec says. It never touches
// anything it does not own.
package apps
