// Package consensus is the gateways' hashicorp/raft group (raft-boltdb/v2 on
// disk) and its FSM, which holds the fleet spec: devices, join tokens (hashed),
// applications, rollouts and policies. Only gateways run it.
package consensus
