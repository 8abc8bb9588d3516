// Package netgate applies a reachability hook to connections: before each
// dial, and on every read and write of an established connection, it asks
// the hook whether the remote address may be reached. Production nodes run
// with no hook; test fleets use it to cut links between groups of nodes,
// including connections that were open before the cut. It imports no other
// fleetmesh package.
package netgate

import (
	"context"
	"net"
	"time"
)

// Hook returns an error when addr must not be reached.
type Hook func(addr string) error

// Conn wraps c so that each Read and Write first consults hook with the
// remote address. A nil hook returns c itself.
func Conn(c net.Conn, hook Hook) net.Conn {
	if hook == nil || c == nil {
		return c
	}
	return &conn{Conn: c, hook: hook}
}

type conn struct {
	net.Conn
	hook Hook
}

func (c *conn) Read(p []byte) (int, error) {
	if err := c.hook(c.RemoteAddr().String()); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.hook(c.RemoteAddr().String()); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Write(p)
}

// Listener wraps every accepted connection with the hook.
func Listener(ln net.Listener, hook Hook) net.Listener {
	if hook == nil {
		return ln
	}
	return &listener{Listener: ln, hook: hook}
}

type listener struct {
	net.Listener
	hook Hook
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Conn(c, l.hook), nil
}

// Dialer dials from localIP (when it is a specific address, so peers see
// which node is calling) and gates the connection with hook.
type Dialer struct {
	LocalIP string
	Hook    Hook
	Timeout time.Duration
}

// DialContext dials addr.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.Hook != nil {
		if err := d.Hook(addr); err != nil {
			return nil, err
		}
	}
	nd := &net.Dialer{Timeout: d.Timeout}
	if ip := net.ParseIP(d.LocalIP); ip != nil && !ip.IsUnspecified() {
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return Conn(c, d.Hook), nil
}
