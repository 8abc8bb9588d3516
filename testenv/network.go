package testenv

import (
	"fmt"
	"net"
	"sync"
)

// Network decides which test nodes can reach which. Every node has its own
// loopback IP; a node's dial hook asks the Network before each packet or
// connection it sends. Blocking at the sender on both sides cuts a link both
// ways, as a pulled cable would.
type Network struct {
	mu    sync.RWMutex
	group map[string]int // ip -> partition group; absent: reaches everyone
}

// NewNetwork returns a network with no partitions.
func NewNetwork() *Network { return &Network{group: map[string]int{}} }

// Partition puts each list of IPs in its own group.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, g := range groups {
		for _, ip := range g {
			n.group[ip] = i + 1
		}
	}
}

// Heal removes all partitions.
func (n *Network) Heal() {
	n.mu.Lock()
	n.group = map[string]int{}
	n.mu.Unlock()
}

// DialHook returns the hook for the node at ip.
func (n *Network) DialHook(ip string) func(addr string) error {
	return func(addr string) error {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		n.mu.RLock()
		a, aok := n.group[ip]
		b, bok := n.group[host]
		n.mu.RUnlock()
		if aok && bok && a != b {
			return fmt.Errorf("testenv: %s cannot reach %s (partitioned)", ip, host)
		}
		return nil
	}
}
