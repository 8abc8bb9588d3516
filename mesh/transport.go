package mesh

import (
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetmesh/fleetmesh/node/netgate"
	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// AdvertiseIP returns the address to give peers when listening on every address
// (0.0.0.0, the agent's default): the private address of the interface that
// holds the default route, as memberlist and Consul pick it, else the first
// non-loopback IPv4 address, else 127.0.0.1 (a machine with no network).
//
// It is worked out once per process (go-sockaddr runs `ip route` to find
// the default route), though the agent asks for gossip, Raft and the API.
var AdvertiseIP = sync.OnceValue(advertiseIP)

func advertiseIP() string {
	if ip, err := sockaddr.GetPrivateIP(); err == nil && ip != "" {
		return ip
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String()
		}
	}
	return "127.0.0.1"
}

// udpRecvBuf is the socket receive buffer asked for (halved until the
// kernel takes it), as memberlist's NetTransport does: gossip arrives in
// bursts.
const udpRecvBuf = 2 << 20

// transport is memberlist's network transport on one address: packets over
// UDP, streams over TCP, on the same port. It does what memberlist's
// NetTransport does, with two differences:
//   - UDP is read into one reused 64 KiB buffer and each packet is copied
//     out at its own size. NetTransport allocates 64 KiB for every packet;
//     at N = 100 that was 69% of all allocation, garbage collection took 27%
//     of the CPU, and the probes it delayed made the mesh declare live
//     members dead, in waves (BENCHMARKS.md).
//   - Every packet and connection first asks the dial hook, if any, whether
//     its address may be reached (tests cut links with it).
type transport struct {
	dial     func(addr string) error
	logger   *log.Logger
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	// done closes at Shutdown, so a loop blocked handing memberlist a packet
	// or connection nobody reads (memberlist not started yet, or gone)
	// gives up.
	done     chan struct{}
	shutdown atomic.Bool
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport listens on host:port (port 0: one that is free for both TCP
// and UDP).
func newTransport(host string, port int, dial func(string) error, logger *log.Logger) (*transport, error) {
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", host)
	}
	t := &transport{dial: dial, logger: logger, packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), done: make(chan struct{})}
	for try := 0; ; try++ {
		tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
		if err != nil {
			return nil, err
		}
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: tcp.Addr().(*net.TCPAddr).Port})
		if err != nil {
			tcp.Close()
			if port == 0 && try < 10 {
				continue // the port TCP picked is taken for UDP: pick again
			}
			return nil, err
		}
		for size := udpRecvBuf; size > 0 && udp.SetReadBuffer(size) != nil; size /= 2 {
		}
		t.tcp, t.udp = tcp, udp
		break
	}
	t.wg.Add(2)
	go t.acceptLoop()
	go t.readLoop()
	return t, nil
}

// Port is the port listened on.
func (t *transport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

func (t *transport) allowed(addr string) error {
	if t.dial == nil {
		return nil
	}
	return t.dial(addr)
}

// FinalAdvertiseAddr is the address given (memberlist passes the configured
// advertise address), or the one listened on.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		a := t.tcp.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			return nil, 0, errors.New("listening on every address: an advertise address is needed")
		}
		return a.IP, a.Port, nil
	}
	a := net.ParseIP(ip)
	if a == nil {
		return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
	}
	if a4 := a.To4(); a4 != nil {
		a = a4
	}
	return a, port, nil
}

// WriteTo sends one packet; a packet the dial hook refuses is dropped
// silently, as a cut cable would.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.allowed(addr) != nil {
		return time.Now(), nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if err := t.allowed(addr); err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return netgate.Conn(c, t.dial), nil
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes both listeners and waits for their loops.
func (t *transport) Shutdown() error {
	if t.shutdown.Swap(true) {
		return nil
	}
	close(t.done)
	t.tcp.Close()
	t.udp.Close()
	t.wg.Wait()
	return nil
}

func (t *transport) acceptLoop() {
	defer t.wg.Done()
	backoff := time.Duration(0)
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] memberlist: accepting a TCP connection: %v", err)
			time.Sleep(backoff) // a listener error (say, out of file descriptors): do not spin
			continue
		}
		backoff = 0
		select {
		case t.streamCh <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}

func (t *transport) readLoop() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, addr, err := t.udp.ReadFrom(buf)
		ts := time.Now() // as close to the read as can be: memberlist times probes by it
		if err != nil {
			if t.shutdown.Load() {
				return
			}
			t.logger.Printf("[ERR] memberlist: reading a UDP packet: %v", err)
			continue
		}
		if n < 1 {
			continue
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: addr, Timestamp: ts}:
		case <-t.done:
			return
		}
	}
}
