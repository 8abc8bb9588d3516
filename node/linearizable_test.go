package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/fleetmesh/fleetmesh/node/api"
	"github.com/fleetmesh/fleetmesh/testenv"
)

// tokenOp is one operation on the spec's set of join tokens, seen by key:
// the creation of token Key, or a read that did (Output true) or did not
// find it.
type tokenOp struct {
	Key string
	Add bool
}

// tokenSetModel is a grow-only set, partitioned by element: a history of a
// set is linearizable if and only if each element's history is, and an
// element is a register that goes from absent to present once.
var tokenSetModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, o := range h {
			k := o.Input.(tokenOp).Key
			by[k] = append(by[k], o)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, p := range by {
			out = append(out, p)
		}
		return out
	},
	Init: func() any { return false },
	Step: func(state, input, output any) (bool, any) {
		if input.(tokenOp).Add {
			return true, true
		}
		return output.(bool) == state.(bool), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(tokenOp)
		if in.Add {
			return "create " + in.Key
		}
		return fmt.Sprintf("read %s: %v", in.Key, output)
	},
}

// Spec writes and consistent reads are linearizable (porcupine judges the
// history) through every node, gateways and an edge alike, while the Raft
// leader is killed and restarted and cut off from the others and healed:
// no read misses a write that finished before it began, none sees one
// undone, and no committed write is lost.
func TestSpecWritesAndConsistentReadsAreLinearizable(t *testing.T) {
	f := testenv.NewFleet(t, testenv.Options{Gateways: 3, Edges: []testenv.Spec{{Name: "e1", Role: "sensor"}}})
	names := []string{"gw1", "gw2", "gw3", "e1"}
	clients := map[string]*api.Client{}
	for _, n := range names { // addresses stay the same across restarts
		c, err := api.NewClient(f.Member(n).Node.APIAddr(), f.Admin, f.CA)
		if err != nil {
			t.Fatal(err)
		}
		clients[n] = c
	}

	start := time.Now()
	var mu sync.Mutex
	type add struct {
		id        string
		call, ret int64
		client    int
	}
	type read struct {
		ids       map[string]bool
		call, ret int64
		client    int
	}
	var adds []add
	var reads []read
	var succeeded, failed atomic.Int64
	readOn := func(ctx context.Context, worker int, name string) bool {
		call := int64(time.Since(start))
		var toks []api.TokenInfo
		if _, err := clients[name].Do(ctx, "GET", "/v1/tokens?consistent", nil, &toks); err != nil {
			return false // no answer, no observation
		}
		r := read{ids: map[string]bool{}, call: call, ret: int64(time.Since(start)), client: worker}
		for _, tk := range toks {
			r.ids[tk.ID] = true
		}
		mu.Lock()
		reads = append(reads, r)
		mu.Unlock()
		return true
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(halt) // also when the test ends early: no clients left running
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				name := names[rand.IntN(len(names))]
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				ok := false
				if rand.IntN(2) == 0 {
					call := int64(time.Since(start))
					r, err := clients[name].CreateToken(ctx, api.TokenCreateRequest{Role: "sensor", TTL: "1h"})
					// A failed write may still commit: its outcome is
					// unknown (see the history below).
					if ok = err == nil; ok {
						mu.Lock()
						adds = append(adds, add{id: r.ID, call: call, ret: int64(time.Since(start)), client: w})
						mu.Unlock()
					}
				} else {
					ok = readOn(ctx, w, name)
				}
				cancel()
				if ok {
					succeeded.Add(1)
					continue
				}
				failed.Add(1)
				select { // a node that is down refuses at once: don't spin on it
				case <-stop:
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	}

	// The faults come in turns, each lasting until the clients have done
	// enough operations through the others, so that the history spans
	// failovers however fast or slow the machine.
	progress := func(n int64) {
		t.Helper()
		target := succeeded.Load() + n
		testenv.Eventually(t, 60*time.Second, func() error {
			if got := succeeded.Load(); got < target {
				return fmt.Errorf("%d operations succeeded, waiting for %d", got, target)
			}
			return nil
		})
	}
	leader := func() string {
		t.Helper()
		var l string
		testenv.Eventually(t, 20*time.Second, func() error {
			if l = f.Leader(); l == "" {
				return fmt.Errorf("no leader")
			}
			return nil
		})
		return l
	}
	progress(100)
	for round := range 4 {
		l := leader()
		if round%2 == 0 {
			f.Kill(l)
			progress(100)
			f.Restart(l)
		} else {
			var rest []string
			for _, n := range names {
				if n != l {
					rest = append(rest, n)
				}
			}
			f.Partition([]string{l}, rest)
			progress(100)
			f.Heal()
		}
		progress(100)
	}
	halt()

	// Last, every node's consistent read, once the fleet is whole again.
	f.WaitConverged(30 * time.Second)
	for i, n := range names {
		testenv.Eventually(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if !readOn(ctx, workers+i, n) {
				return fmt.Errorf("%s: no consistent read yet", n)
			}
			return nil
		})
	}

	// Every token any read saw, and every creation that succeeded. A token
	// no successful creation accounts for comes from one that failed (or
	// from the fleet's own setup): its creation may have happened at any
	// time, so it is pending from the start to after the end, and porcupine
	// still holds it to the rest: once seen, seen by every later read.
	var history []porcupine.Operation
	keys := map[string]bool{}
	end := int64(time.Since(start)) + 1
	for _, a := range adds {
		keys[a.id] = true
		history = append(history, porcupine.Operation{ClientId: a.client, Input: tokenOp{Key: a.id, Add: true}, Output: true, Call: a.call, Return: a.ret})
	}
	pending := 0
	for _, r := range reads {
		for id := range r.ids {
			if !keys[id] {
				keys[id] = true
				pending++
				history = append(history, porcupine.Operation{ClientId: workers + len(names), Input: tokenOp{Key: id, Add: true}, Output: true, Call: 0, Return: end})
			}
		}
	}
	for _, r := range reads {
		for id := range keys {
			history = append(history, porcupine.Operation{ClientId: r.client, Input: tokenOp{Key: id}, Output: r.ids[id], Call: r.call, Return: r.ret})
		}
	}
	t.Logf("%d token creations and %d consistent reads checked, with %d tokens of failed or earlier creations (%d operations by element); %d operations failed during the faults",
		len(adds), len(reads), pending, len(history), failed.Load())
	if len(adds) < 100 || len(reads) < 100 {
		t.Fatalf("only %d creations and %d reads succeeded: too few to judge", len(adds), len(reads))
	}
	t0 := time.Now()
	res, info := porcupine.CheckOperationsVerbose(tokenSetModel, history, 2*time.Minute)
	t.Logf("porcupine: %v in %v", res, time.Since(t0).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("fleetmesh-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(tokenSetModel, info, path); err == nil {
			t.Errorf("the history of token creations and consistent reads is not linearizable; see %s", path)
		} else {
			t.Errorf("the history of token creations and consistent reads is not linearizable (no visualization: %v)", err)
		}
	default:
		t.Errorf("porcupine could not decide in 2 minutes")
	}
}

// The model is not vacuous: porcupine refuses a read that misses a creation
// finished before it began, and one that loses a token another read saw,
// even one whose creation failed (pending to the end of the history).
func TestTokenSetModelRefusesStaleReads(t *testing.T) {
	op := func(add bool, seen bool, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: tokenOp{Key: "k", Add: add}, Output: seen, Call: call, Return: ret}
	}
	for name, h := range map[string][]porcupine.Operation{
		"a read after the creation misses it": {op(true, true, 0, 10), op(false, false, 20, 30)},
		"a later read loses what one saw":     {op(true, true, 0, 100), op(false, true, 10, 20), op(false, false, 30, 40)},
		"a failed creation seen, then lost":   {op(true, true, 0, 1000), op(false, true, 10, 20), op(false, false, 30, 40)},
	} {
		if porcupine.CheckOperations(tokenSetModel, h) {
			t.Errorf("%s: judged linearizable", name)
		}
	}
	ok := []porcupine.Operation{op(true, true, 0, 100), op(false, false, 10, 20), op(false, true, 30, 40), op(false, true, 110, 120)}
	if !porcupine.CheckOperations(tokenSetModel, ok) {
		t.Error("a read concurrent with the creation may miss it, later ones see it: judged not linearizable")
	}
}
