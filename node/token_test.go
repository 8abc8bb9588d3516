package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/consensus"
	"github.com/fleetmesh/fleetmesh/node"
	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/node/jointoken"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// syncBuffer collects every node's log so tests can grep it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// 6. Tokens: expired, used-up, malformed and unknown tokens are refused
// with a clear message and no panic; the secret never appears in logs or API
// output.
func TestJoinTokensRefused(t *testing.T) {
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Role: "sensor"}},
		Log: logTo(logs)})
	ctx := context.Background()
	admin := f.Client("gw1")
	var secrets []string

	// Used up: one use, then refused.
	once, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, mustParse(t, once.Token).Secret)
	if _, err := f.Join(testenv.Spec{Name: "s-first", Role: "sensor"}, once.Token); err != nil {
		t.Fatalf("first use of a one-use token: %v", err)
	}
	_, err = f.Join(testenv.Spec{Name: "s-second", Role: "sensor"}, once.Token)
	wantRefused(t, err, "no uses left")

	// Expired.
	short, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, mustParse(t, short.Token).Secret)
	testenv.Eventually(t, 5*time.Second, func() error {
		if time.Now().Before(short.Expires) {
			return errorf("not expired yet")
		}
		return nil
	})
	_, err = f.Join(testenv.Spec{Name: "s-late", Role: "sensor"}, short.Token)
	wantRefused(t, err, "expired")

	// Wrong role.
	gwTok, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, mustParse(t, gwTok.Token).Secret)
	_, err = f.Join(testenv.Spec{Name: "s-role", Role: "sensor"}, gwTok.Token)
	wantRefused(t, err, "another role")

	// Unknown: right fleet, right format, made-up id and secret. Neither
	// this nor a wrong secret reaches the Raft log: anyone can call
	// /v1/join, and a log entry costs every gateway an fsync.
	logLen := f.Member("gw1").Node.Store().LastIndex()
	good := mustParse(t, gwTok.Token)
	fake, err := jointoken.New(good.Pin, good.Addrs)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, fake.Secret)
	_, err = f.Join(testenv.Spec{Name: "s-fake", Role: "sensor"}, fake.String())
	wantRefused(t, err, "unknown")

	// Right id, wrong secret.
	wrong := good
	wrong.Secret = fake.Secret
	_, err = f.Join(testenv.Spec{Name: "s-wrong", Role: "gateway"}, wrong.String())
	wantRefused(t, err, "unknown")
	if after := f.Member("gw1").Node.Store().LastIndex(); after != logLen {
		t.Errorf("joins with unknown tokens grew the Raft log from index %d to %d", logLen, after)
	}

	// Malformed: refused before any network traffic.
	for _, bad := range []string{"fm1:", "garbage", "fm1:abc.def@x@y", good.String() + "@extra"} {
		_, err := f.Join(testenv.Spec{Name: "s-bad", Role: "sensor"}, bad)
		if !errors.Is(err, jointoken.ErrMalformed) {
			t.Errorf("token %q: got %v, want malformed", bad, err)
		}
	}

	// Token listings never show secrets; the used-up token says so.
	toks, err := admin.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == once.ID && tk.UsesLeft != 0 {
			t.Errorf("one-use token has %d uses left", tk.UsesLeft)
		}
	}
	var raw bytes.Buffer
	for _, n := range f.Live() {
		for _, p := range []string{"/v1/tokens", "/v1/nodes", "/v1/fleet", "/v1/health"} {
			var out any
			if _, err := f.Client(n).Do(ctx, "GET", p, nil, &out); err != nil {
				t.Fatalf("%s %s: %v", n, p, err)
			}
			b, _ := jsonMarshal(out)
			raw.Write(b)
		}
		text, err := metricsText(f, n)
		if err != nil {
			t.Fatal(err)
		}
		raw.WriteString(text)
	}
	all := raw.String() + logs.String()
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a token secret appears in logs or API output")
		}
	}
	if strings.Contains(all, strings.TrimPrefix(f.Admin, "fmop:")) {
		t.Errorf("the operator credential appears in logs or API output")
	}
}

func mustParse(t *testing.T, s string) jointoken.Token {
	t.Helper()
	tk, err := jointoken.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func wantRefused(t *testing.T, err error, substr string) {
	t.Helper()
	if !errors.Is(err, node.ErrJoinRefused) || !strings.Contains(err.Error(), substr) {
		t.Errorf("got %v, want a refusal mentioning %q", err, substr)
	}
}

// A token whose pin belongs to another fleet is refused before the secret
// is sent.
func TestJoinRefusesForeignFleet(t *testing.T) {
	a := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	b := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	tokA := mustParse(t, a.NewToken("sensor", 0))
	tokB := mustParse(t, b.NewToken("sensor", 0))
	// A's secret and pin, pointed at B's address.
	forged := tokA
	forged.Addrs = tokB.Addrs
	joinsAtB := func() string {
		text, err := metricsText(b, "gw1")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, `fleetmesh_api_requests_total{code=`) && strings.Contains(l, `method="POST"`) {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	before := joinsAtB()
	if before == "" {
		t.Fatal("fleet B's request counter shows no POST (the token create): the check would see nothing")
	}
	_, err := a.Join(testenv.Spec{Name: "victim", Role: "sensor"}, forged.String())
	if err == nil || !strings.Contains(err.Error(), "does not match the pin") || !strings.Contains(err.Error(), "not sent") {
		t.Fatalf("got %v, want a pin mismatch that sent no secret", err)
	}
	// Fleet B's side: no request (so no secret) reached its API; the TLS
	// handshake was all.
	if after := joinsAtB(); after != before {
		t.Fatalf("fleet B answered a request:\nbefore %s\nafter %s", before, after)
	}
}

// Operator credentials: none, a bad one, and the right one.
func TestAPICredentials(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{}}})
	ctx := context.Background()
	for _, n := range f.Names() {
		_, _, err := f.ClientWith(n, "").Fleet(ctx)
		wantStatus(t, err, 401, "operator credential")
		_, _, err = f.ClientWith(n, "fmop:nothere.xxxxxxxx").Fleet(ctx)
		wantStatus(t, err, 401, "not recognised")
		// Health answers anyone whether the node is up, and only a
		// credential holder what the fleet is.
		anon, err := f.ClientWith(n, "").Health(ctx)
		if err != nil {
			t.Errorf("%s: health needs no credential: %v", n, err)
		} else if anon.State == "" || anon.Name != "" || anon.ClusterID != "" || anon.Leader != "" || anon.Version != "" || anon.Members != 0 {
			t.Errorf("%s: health without a credential says too much: %+v", n, anon)
		}
		full, err := f.Client(n).Health(ctx)
		if err != nil || full.Name != n || full.ClusterID == "" || full.Leader == "" || full.Members == 0 {
			t.Errorf("%s: health with a credential: %+v, %v", n, full, err)
		}
		_, err = f.ClientWith(n, "fmop:nothere.xxxxxxxx").Health(ctx)
		wantStatus(t, err, 401, "not recognised")
	}
}

func wantStatus(t *testing.T, err error, code int, substr string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Message, substr) {
		t.Errorf("got %v, want HTTP %d mentioning %q", err, code, substr)
	}
}

// Bad request bodies get a clear 400 and change nothing.
func TestBadJSONBodies(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	ctx := context.Background()
	c := f.Client("gw1")
	before := f.Member("gw1").Node.Store().Version()
	cases := map[string]struct {
		body any
		want string
	}{
		"not json":      {api.RawBody("{role: sensor"), "invalid JSON"},
		"empty":         {api.RawBody(""), "empty"},
		"unknown field": {map[string]any{"role": "sensor", "colour": "red"}, "unknown field"},
		"wrong type":    {map[string]any{"role": "sensor", "uses": "three"}, `field "uses"`},
		"trailing":      {api.RawBody(`{"role":"sensor"} {"role":"gateway"}`), "trailing data"},
		"bad role":      {map[string]any{"role": "toaster"}, "role"},
		"bad ttl":       {map[string]any{"role": "sensor", "ttl": "forever"}, "ttl"},
		"negative uses": {map[string]any{"role": "sensor", "uses": -1}, "uses"},
		"huge":          {api.RawBody(`{"role":"` + strings.Repeat("x", 2<<20) + `"}`), "larger than"},
	}
	for name, tc := range cases {
		_, err := c.Do(ctx, "POST", "/v1/tokens", tc.body, nil)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != 400 || !strings.Contains(se.Message, tc.want) {
			t.Errorf("%s: got %v, want 400 mentioning %q", name, err, tc.want)
		}
	}
	if after := f.Member("gw1").Node.Store().Version(); after != before {
		t.Errorf("refused requests changed the spec: %d -> %d", before, after)
	}
	// The join endpoint too, without any credential.
	_, err := f.ClientWith("gw1", "").Do(ctx, "POST", "/v1/join", api.RawBody("[]"), nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 400 {
		t.Errorf("join with a bad body: %v", err)
	}
}

// A join that fails on the device after the fleet committed it can be
// retried with the same token: the same key makes it the same join, not a
// second device with a taken name.
func TestJoinRetryAfterLocalFailure(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1})
	tok := f.NewToken("sensor", 1)
	// Occupy a port, then ask the joiner to bind it: refused before the
	// fleet is asked, so the one-use token is not spent.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := node.Config{DataDir: filepath.Join(t.TempDir(), "s9"), Name: "s9", Role: "sensor",
		Bind: busy.Addr().String(), API: "127.0.0.1:0", RaftBind: "127.0.0.1:0", Join: tok}
	testenv.TestTimings(&cfg)
	if n, err := node.Start(cfg); err == nil || !strings.Contains(err.Error(), "bind") {
		if n != nil {
			n.Close()
		}
		t.Fatalf("join on a busy port: %v", err)
	}
	toks, err := f.Client("gw1").Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.Used != 0 && tk.MaxUses == 1 {
			t.Fatal("a join refused on the device's side spent the token")
		}
	}
	cfg.Bind = "127.0.0.1:0"
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	n.Close()
}

// The leader prunes join tokens a week after they expire, once every
// gateway's binary can apply the prune, and the removal reaches every node's
// copy of the spec, edges too; a token not expired stays. The clock the leader prunes by is moved; nothing else
// of the fleet sees the jump. (TestPruneTokensKeepsRetention in consensus
// checks the retention's edges.)
func TestExpiredTokensArePrunedEverywhere(t *testing.T) {
	var skew atomic.Int64
	var gw3Old atomic.Bool
	gw3Old.Store(true)
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	logs := &syncBuffer{}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}},
		Log: logTo(logs),
		Tune: func(c *node.Config) {
			c.Now = clock
			c.OldFSM = c.Name == "gw3" && gw3Old.Load()
		}})
	ctx := context.Background()
	admin := f.Client(f.Leader())
	short, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	long, err := admin.CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "720h"})
	if err != nil {
		t.Fatal(err)
	}
	has := func(name string) (map[string]bool, error) {
		ts, err := f.Client(name).Tokens(ctx)
		if err != nil {
			return nil, err
		}
		m := map[string]bool{}
		for _, tk := range ts {
			m[tk.ID] = true
		}
		return m, nil
	}
	everywhere := func(want map[string]bool) func() error {
		return func() error {
			for _, name := range f.Names() {
				got, err := has(name)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				for id, present := range want {
					if got[id] != present {
						return fmt.Errorf("%s: token %s present %v, want %v", name, id, got[id], present)
					}
				}
			}
			return nil
		}
	}
	testenv.Eventually(t, 10*time.Second, everywhere(map[string]bool{short.ID: true, long.ID: true}))

	// A week and a bit after the short one expired, but gw3 runs a binary
	// too old to apply a prune (it gossips no FSM level): the leader waits
	// rather than part gw3's spec from the others'.
	skew.Store(int64(time.Hour + consensus.TokenRetention + time.Minute))
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "wait for every gateway to run a binary that prunes them") {
			return errorf("the leader has not looked yet")
		}
		return nil
	})
	if err := everywhere(map[string]bool{short.ID: true, long.ID: true})(); err != nil {
		t.Fatalf("pruned while a gateway could not apply it: %v", err)
	}

	// gw3 upgraded: at the leader's next look the token goes everywhere.
	gw3Old.Store(false)
	f.Stop("gw3")
	f.Restart("gw3")
	testenv.Eventually(t, 10*time.Second, func() error {
		m, ok := f.Member(f.Leader()).Node.Mesh().Member("gw3")
		if !ok || !m.Alive || m.FSM != consensus.FSMLevel {
			return errorf("the leader does not see gw3's new binary yet")
		}
		return nil
	})
	skew.Add(int64(2 * time.Minute))
	testenv.Eventually(t, 10*time.Second, everywhere(map[string]bool{short.ID: false, long.ID: true}))
}
