package node

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed joins a single source address may make: a burst, then one every
// joinFailEvery. Only failures count, so a site whose devices all join
// from behind one NAT router is never slowed; a device looping on a bad
// token, or someone guessing, is. A throttled source gets 429 with
// Retry-After, which joining agents honour (joinRetrying).
const (
	joinFailBurst   = 10
	joinFailEvery   = time.Second
	joinLimitSweep  = 4096 // sources remembered before idle ones are forgotten
	joinLimitMaxAge = time.Minute
)

// joinLimiter counts failed joins per source address.
type joinLimiter struct {
	mu      sync.Mutex
	sources map[string]*joinSource
	now     func() time.Time
}

type joinSource struct {
	lim  *rate.Limiter
	last time.Time
}

func newJoinLimiter(now func() time.Time) *joinLimiter {
	return &joinLimiter{sources: map[string]*joinSource{}, now: now}
}

// wait says how long ip must wait before its next join attempt is heard
// (0: at once).
func (l *joinLimiter) wait(ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sources[ip]
	if !ok {
		return 0
	}
	if t := s.lim.TokensAt(l.now()); t < 1 {
		return time.Duration((1 - t) * float64(joinFailEvery))
	}
	return 0
}

// failed records a failed join from ip.
func (l *joinLimiter) failed(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s, ok := l.sources[ip]
	if !ok {
		if len(l.sources) >= joinLimitSweep {
			l.sweep(now)
		}
		s = &joinSource{lim: rate.NewLimiter(rate.Every(joinFailEvery), joinFailBurst)}
		l.sources[ip] = s
	}
	s.last = now
	s.lim.AllowN(now, 1)
}

// sweep forgets sources with no failure for joinLimitMaxAge (their budget
// is full again, the same as never seen). If that frees nothing, the table
// is full of sources failing right now; it starts over rather than grow
// without bound.
func (l *joinLimiter) sweep(now time.Time) {
	for ip, s := range l.sources {
		if now.Sub(s.last) > joinLimitMaxAge {
			delete(l.sources, ip)
		}
	}
	if len(l.sources) >= joinLimitSweep {
		clear(l.sources)
	}
}

// limitJoins wraps the public join endpoint: a source over its budget of
// failed joins gets 429 and is not heard; a join the fleet refuses (4xx)
// spends one of its budget. Fleet members' forwarded joins
// (/internal/v1/join) are not limited: the entry node already was.
func (n *Node) limitJoins(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ip, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			ip = r.RemoteAddr
		}
		if d := n.joinLimit.wait(ip); d > 0 {
			secs := int(math.Ceil(d.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, fmt.Errorf("too many failed joins from %s; retry in %ds", ip, secs))
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, r)
		if rec.code >= 400 && rec.code < 500 {
			n.joinLimit.failed(ip)
		}
	}
}
