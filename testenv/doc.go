// Package testenv builds test fleets of real nodes in one process (real
// memberlist on 127.0.0.x, real Raft on boltdb in temporary dirs, real HTTPS),
// and of whole agents in Docker containers of the project's own image
// (ContainerFleet); it injects faults (kill, restart, partition), and offers
// Eventually helpers. Only tests import it.
package testenv
