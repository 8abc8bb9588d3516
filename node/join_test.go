package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/pki"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// logged says whether a line of node's log contains every one of words.
func logged(logs *syncBuffer, node string, words ...string) bool {
	for _, l := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(l, "node="+node+" ") && !strings.HasSuffix(l, "node="+node) {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}

// A device installed while its fleet is out of reach (the gateway down, the
// link cut) keeps trying to join, and joins once the fleet is back; it
// does not give up and exit.
func TestJoinWaitsForTheFleet(t *testing.T) {
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1,
		Log: logTo(logs)})
	tok := f.NewToken("sensor", 0)
	f.Kill("gw1")

	done := make(chan error, 1)
	go func() {
		_, err := f.Join(testenv.Spec{Name: "late", Role: "sensor", Site: "site-a"}, tok)
		done <- err
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if !logged(logs, "late", "retrying", "unreachable") {
			return errors.New("the joining node has not logged a retry for the unreachable fleet yet")
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("the join ended while the fleet was unreachable: %v", err)
	default:
	}

	f.Restart("gw1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("join after the gateway came back: %v", err)
		}
	case <-time.After(45 * time.Second): // (testenv's JoinTimeout, 30 s, ends it first)
		t.Fatal("the join did not end within 45 s of the gateway coming back")
	}
	f.WaitConverged(30 * time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		st, err := f.NodeState("gw1", "late")
		if err != nil || st != "ready" {
			return fmt.Errorf("gw1 sees late as %q (%v), want ready", st, err)
		}
		return nil
	})
	if strings.Contains(logs.String(), mustParse(t, tok).Secret) {
		t.Error("the token secret appears in the logs")
	}
}

// bogusJoiner posts joins with a token the fleet never issued, from a
// chosen source address.
type bogusJoiner struct {
	t      *testing.T
	client *http.Client
	url    string
	body   []byte
}

func newBogusJoiner(t *testing.T, f *testenv.Fleet, gw, sourceIP string) *bogusJoiner {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.CA)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(sourceIP)}, Timeout: 5 * time.Second}
	key, _, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR("intruder", key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.JoinRequest{TokenID: "zzzzzz", Secret: strings.Repeat("q", 32), Name: "intruder", Role: "sensor", CSR: string(csr)})
	return &bogusJoiner{t: t, body: body, url: "https://" + f.Member(gw).Node.APIAddr() + "/v1/join",
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: d.DialContext, TLSClientConfig: &tls.Config{RootCAs: pool},
		}}}
}

// try posts one join and returns the status, the Retry-After header and
// the error text.
func (b *bogusJoiner) try() (int, string, string) {
	b.t.Helper()
	res, err := b.client.Post(b.url, "application/json", bytes.NewReader(b.body))
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var e api.Error
	json.Unmarshal(raw, &e)
	return res.StatusCode, res.Header.Get("Retry-After"), e.Error
}

// Failed joins are limited per source address: after a burst of refusals a
// source is answered 429 with Retry-After and not heard, other sources are
// not affected, and a device with a good token behind the throttled
// address waits as told and then joins.
func TestFailedJoinsAreThrottledPerSource(t *testing.T) {
	// The node's clock moves only when the test moves it, so the throttled
	// source stays throttled until then however slow the machine.
	base := time.Now()
	var skew atomic.Int64
	clock := func() time.Time { return base.Add(time.Duration(skew.Load())) }
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1,
		Log:  logTo(logs),
		Tune: func(c *node.Config) { c.Now = clock }})
	const shared = "127.12.0.1" // one site's NAT router, say
	bad := newBogusJoiner(t, f, "gw1", shared)

	refused := 0
	for {
		code, after, msg := bad.try()
		if code == http.StatusTooManyRequests {
			if after != "1" || !strings.Contains(msg, "too many failed joins from "+shared) {
				t.Errorf("throttled answer: Retry-After %q, %q; want Retry-After 1 and a message naming the source", after, msg)
			}
			break
		}
		if code != http.StatusForbidden || !strings.Contains(msg, "unknown") {
			t.Fatalf("bogus join %d: HTTP %d %q, want 403 naming the unknown token", refused+1, code, msg)
		}
		if refused++; refused > 50 {
			t.Fatal("50 failed joins from one address and still not throttled")
		}
	}
	if refused < 5 {
		t.Errorf("throttled after %d failed joins; a burst of retries by an honest device must get through", refused)
	}
	if code, _, msg := newBogusJoiner(t, f, "gw1", "127.12.0.2").try(); code != http.StatusForbidden {
		t.Errorf("another source: HTTP %d %q, want 403: the limit is per source", code, msg)
	}

	tok := f.NewToken("sensor", 0)
	done := make(chan error, 1)
	go func() {
		_, err := f.Join(testenv.Spec{Name: "honest", Role: "sensor", Site: "site-a", IP: shared}, tok)
		done <- err
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if !logged(logs, "honest", "retrying", "too many failed joins") {
			return errors.New("the device behind the throttled address has not been told to wait yet")
		}
		return nil
	})
	skew.Add(int64(2 * time.Second))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("join once the source may try again: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the join did not finish within 60 s of the limit lifting")
	}
	if strings.Contains(logs.String(), mustParse(t, tok).Secret) {
		t.Error("the token secret appears in the logs")
	}
}

// A join stopped while it waits for the fleet ends cleanly with an error
// that says so, and a join timeout ends it too; neither leaves a membership
// behind in the data dir.
func TestJoinWaitEnds(t *testing.T) {
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1,
		Log: logTo(logs)})
	tok := f.NewToken("sensor", 0)
	f.Kill("gw1")

	m := f.Config(&testenv.Member{Spec: testenv.Spec{Name: "s1", Role: "sensor"}, IP: "127.12.1.1", DataDir: t.TempDir()}, false, tok)
	m.JoinTimeout = 0 // keep trying: only the context can end it
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // however the test ends, the join does not go on
	done := make(chan error, 1)
	go func() {
		n, err := node.StartContext(ctx, m)
		if n != nil {
			n.Close()
		}
		done <- err
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if !logged(logs, "s1", "retrying") {
			return errors.New("s1 is not waiting to retry yet")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "stopped") {
			t.Errorf("stopped join: %v, want an error saying it was stopped", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stopped join did not end")
	}

	m2 := f.Config(&testenv.Member{Spec: testenv.Spec{Name: "s2", Role: "sensor"}, IP: "127.12.1.2", DataDir: t.TempDir()}, false, tok)
	m2.JoinTimeout = 2 * time.Second
	_, err := node.Start(m2)
	if err == nil || !strings.Contains(err.Error(), "gave up") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("join with a 2 s timeout to a fleet that is down: %v, want it to give up naming the unreachable address", err)
	}
	if err != nil && strings.Contains(err.Error(), mustParse(t, tok).Secret) {
		t.Error("the token secret appears in the error")
	}
	for _, c := range []node.Config{m, m2} {
		if _, err := node.Start(node.Config{DataDir: c.DataDir}); !errors.Is(err, node.ErrNoFleet) {
			t.Errorf("%s after the join ended: %v, want no membership (ErrNoFleet)", c.DataDir, err)
		}
	}
}
