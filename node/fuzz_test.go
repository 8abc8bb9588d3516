package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

// fuzzNode is one real bootstrapped gateway shared by a fuzz run; inputs go
// through its real HTTP handler (routing, auth, decoding, validation, Raft).
var (
	fuzzOnce sync.Once
	fuzzN    *Node
	fuzzErr  error
)

func fuzzNode(f *testing.F) *Node {
	fuzzOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			fuzzErr = err
			return
		}
		fuzzN, fuzzErr = Start(Config{DataDir: dir, Name: "fuzz", Role: "gateway", Bootstrap: true,
			Bind: "127.0.0.1:0", API: "127.0.0.1:0", RaftBind: "127.0.0.1:0", HealthInterval: time.Second})
	})
	if fuzzErr != nil {
		f.Fatal(fuzzErr)
	}
	return fuzzN
}

func serveFuzz(t *testing.T, n *Node, method, path, cred string, body []byte) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.RemoteAddr = "192.0.2.1:1234"
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	rec := httptest.NewRecorder()
	n.srv.Handler.ServeHTTP(rec, req)
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusGatewayTimeout {
		t.Fatalf("%s %s %q: HTTP %d %s", method, path, body, rec.Code, rec.Body)
	}
	if !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%s %s %q: answer is not JSON: %q", method, path, body, rec.Body)
	}
	if rec.Code/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Fatalf("%s %s %q: error without a message: %q", method, path, body, rec.Body)
		}
	}
}

// FuzzJoinRequest sends arbitrary bodies to POST /v1/join (and to the
// forwarded join, which refuses callers without a fleet certificate).
func FuzzJoinRequest(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"token_id":"abc","secret":"def","name":"s1","role":"sensor","csr":"x"}`,
		`{"token_id":"abc","secret":"def","name":"S1!","role":"sensor","csr":"x"}`,
		`{"token_id":"abc","secret":"def","name":"s1","role":"toaster","csr":"x"}`,
		`{"token_id":1}`, `{"labels":{"a":1}}`, `{"token_id":"a","secret":"b","name":"n","role":"sensor","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"name":"x"} trailing`, `{"unknown":true}`,
	} {
		f.Add([]byte(s))
	}
	n := fuzzNode(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		serveFuzz(t, n, http.MethodPost, "/v1/join", "", body)
		serveFuzz(t, n, http.MethodPost, "/internal/v1/join", "", body)
	})
}

// FuzzAPIBodies sends arbitrary bodies, with the admin credential, to the
// write endpoints that take one: join tokens, operator credentials, key
// rotation; kind picks the endpoint.
func FuzzAPIBodies(f *testing.F) {
	for _, s := range []struct {
		kind byte
		body string
	}{
		{0, `{"role":"sensor","ttl":"1h","uses":2}`}, {0, `{"role":"sensor","ttl":"-1h"}`}, {0, `{"role":"sensor","ttl":"99999h"}`},
		{0, `{"role":"sensor","uses":-1}`}, {0, `{"role":1}`}, {0, `{`}, {1, `{"role":"viewer","name":"grafana"}`},
		{1, `{"role":"root"}`}, {1, `{"role":"admin","name":"\u0000"}`}, {1, `{"role":"viewer","name":"` + string(bytes.Repeat([]byte("x"), 100)) + `"}`},
		{2, ``}, {2, `{}`}, {2, `{"x":1}`},
	} {
		f.Add(s.kind, []byte(s.body))
	}
	n := fuzzNode(f)
	cred := n.OperatorToken
	paths := []string{"/v1/tokens", "/v1/acl/tokens", "/v1/keys/rotate"}
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		p := paths[int(kind)%len(paths)]
		if p == "/v1/keys/rotate" && json.Valid(body) {
			// Each valid rotation starts a real one; keep the fuzz run
			// about decoding, not about piling up keys.
			body = append([]byte("x"), body...)
		}
		serveFuzz(t, n, http.MethodPost, p, cred, body)
	})
}

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "fleetmesh-fuzz-") }

// TestMain stops the fuzz node and removes its data dir.
func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzN != nil {
		fuzzN.Kill()
		os.RemoveAll(fuzzN.cfg.DataDir)
	}
	os.Exit(code)
}
