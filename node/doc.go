// Package node is the agent that composes everything on one device: its
// identity and data directory, host metrics, the local HTTP API, the join
// handshake, and the loop that makes the device match the fleet spec. It wires
// mesh (gossip), consensus (Raft, gateways only) and apps together; it holds no
// fleet-wide state of its own beyond what those packages give it.
package node
