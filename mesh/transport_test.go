package mesh

import (
	"errors"
	"io"
	"log"
	"strings"
	"testing"
	"time"
)

func testTransport(t *testing.T, dial func(string) error) *transport {
	t.Helper()
	tr, err := newTransport("127.0.0.1", 0, dial, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

func (t *transport) addr() string { return t.udp.LocalAddr().String() }

func recvPacket(t *testing.T, tr *transport) string {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return string(p.Buf)
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5s")
		return ""
	}
}

// The transport reads every packet into one buffer: each packet handed to
// memberlist must be its own copy, untouched by the packets read after it.
func TestTransportPacketsAreCopies(t *testing.T) {
	a, b := testTransport(t, nil), testTransport(t, nil)
	if _, err := a.WriteTo([]byte("first packet"), b.addr()); err != nil {
		t.Fatal(err)
	}
	first := <-b.PacketCh()
	if _, err := a.WriteTo([]byte("SECOND"), b.addr()); err != nil {
		t.Fatal(err)
	}
	if got := recvPacket(t, b); got != "SECOND" {
		t.Fatalf("second packet %q", got)
	}
	if string(first.Buf) != "first packet" || cap(first.Buf) > 64 {
		t.Fatalf("first packet now %q (cap %d): it shares the read buffer", first.Buf, cap(first.Buf))
	}
	if first.From.String() != a.addr() {
		t.Fatalf("first packet from %s; want %s", first.From, a.addr())
	}
}

// A link the dial hook refuses drops packets silently (a cut cable) and
// refuses connections with the hook's error.
func TestTransportDialHookCutsLinks(t *testing.T) {
	b := testTransport(t, nil)
	cut := errors.New("partitioned")
	a := testTransport(t, func(addr string) error {
		if addr == b.addr() {
			return cut
		}
		return nil
	})
	c := testTransport(t, nil)
	if _, err := a.WriteTo([]byte("dropped"), b.addr()); err != nil {
		t.Fatalf("a dropped packet is not an error to the sender: %v", err)
	}
	if _, err := c.WriteTo([]byte("marker"), b.addr()); err != nil {
		t.Fatal(err)
	}
	if got := recvPacket(t, b); got != "marker" {
		t.Fatalf("b received %q across a cut link", got)
	}
	if _, err := a.DialTimeout(b.addr(), time.Second); !errors.Is(err, cut) {
		t.Fatalf("dial across a cut link: %v; want the hook's error", err)
	}

	// An open link carries streams both ways.
	conn, err := c.DialTimeout(b.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	select {
	case in := <-b.StreamCh():
		defer in.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(in, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("stream read %q, %v", buf, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no stream within 5s")
	}
}

func TestTransportAdvertiseAddr(t *testing.T) {
	tr := testTransport(t, nil)
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil || ip.String() != "127.0.0.1" || port != tr.Port() {
		t.Fatalf("no advertise address: %v:%d, %v; want the bound one", ip, port, err)
	}
	ip, port, err = tr.FinalAdvertiseAddr("10.0.0.7", 7946)
	if err != nil || ip.String() != "10.0.0.7" || len(ip) != 4 || port != 7946 {
		t.Fatalf("advertise 10.0.0.7:7946: %v (%d bytes):%d, %v", ip, len(ip), port, err)
	}
	if _, _, err := tr.FinalAdvertiseAddr("gateway-1", 7946); err == nil || !strings.Contains(err.Error(), "gateway-1") {
		t.Fatalf("a host name as advertise address: %v; want an error naming it", err)
	}
	if _, err := newTransport("not-an-ip", 0, nil, log.New(io.Discard, "", 0)); err == nil || !strings.Contains(err.Error(), "not-an-ip") {
		t.Fatalf("bind to a name: %v; want an error naming it", err)
	}
}

// Shutdown returns even when a packet and a connection arrived that nobody
// took (memberlist not yet reading, as in New's error paths).
func TestTransportShutdownWithNothingReading(t *testing.T) {
	tr, err := newTransport("127.0.0.1", 0, nil, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	other := testTransport(t, nil)
	other.WriteTo([]byte("unread"), tr.addr())
	conn, err := other.DialTimeout(tr.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done := make(chan struct{})
	go func() { tr.Shutdown(); tr.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown blocked on a packet or connection nobody read")
	}
}
