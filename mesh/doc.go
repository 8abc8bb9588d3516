// Package mesh carries membership, each node's identity and health summary, and
// offline detection to every node over hashicorp/memberlist gossip. It knows
// nothing of Raft or the spec's contents: it only spreads what node gives it.
package mesh
