package node

// Version is the fleetmesh version, set at build time with
// -ldflags "-X github.com/fleetmesh/fleetmesh/node.Version=...".
var Version = "0.1.0-dev"
