package node

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A request forwarded to a leader ends as soon as the leader it went to is
// no longer the leader, with errLeaderMoved as the cause; otherwise it is
// left alone, and release stops the watch.
func TestUntilGone(t *testing.T) {
	var moved atomic.Bool
	looked := make(chan struct{}, 100)
	ctx, release := untilGone(context.Background(), func() bool {
		select {
		case looked <- struct{}{}:
		default:
		}
		return moved.Load()
	}, errLeaderMoved)
	for range 3 { // three looks at a leader that has not moved
		select {
		case <-looked:
		case <-time.After(10 * time.Second):
			t.Fatal("the leader is not looked at")
		}
	}
	if ctx.Err() != nil {
		t.Fatal("ended while the leader had not moved")
	}
	moved.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not ended 10 s after the leader moved")
	}
	if !errors.Is(context.Cause(ctx), errLeaderMoved) {
		t.Errorf("cause %v, want errLeaderMoved", context.Cause(ctx))
	}
	release()

	ctx, release = untilGone(context.Background(), func() bool { return false }, errLeaderMoved)
	release()
	if context.Cause(ctx) != context.Canceled {
		t.Errorf("after release: cause %v, want canceled", context.Cause(ctx))
	}
}
