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
// joinFailEvery. Only failures count (and joins still being heard, until
// they succeed), so a site whose devices all join from behind one NAT router
// is slowed at most to ten joins at a time; a device looping on a bad token,
// or someone guessing, is held to one a second. A throttled source gets 429
// with Retry-After, which joining agents honour (joinRetrying).
const (
	joinFailBurst    = 10
	joinFailEvery    = time.Second
	joinLimitSources = 4096 // sources remembered at most
	joinLimitMaxAge  = time.Minute
)

// joinLimiter counts failed joins per source (an IPv4 address, or an IPv6
// /64: one host's addresses).
type joinLimiter struct {
	mu      sync.Mutex
	sources map[string]*joinSource
	now     func() time.Time
}

type joinSource struct {
	lim *rate.Limiter
	// inflight are joins being heard: each counts as a failure until it
	// turns out not to be one, so that many at once (parallel connections,
	// HTTP/2 streams) cannot all pass before the first failure counts.
	inflight int
	last     time.Time
}

func newJoinLimiter(now func() time.Time) *joinLimiter {
	return &joinLimiter{sources: map[string]*joinSource{}, now: now}
}

// admit says whether a join from ip is heard now: if so, settle must be
// called with its outcome; if not, wait is how long ip should wait.
func (l *joinLimiter) admit(ip string) (settle func(failed bool), wait time.Duration) {
	key := sourceKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s, ok := l.sources[key]
	if !ok {
		if len(l.sources) >= joinLimitSources {
			l.evict(now)
		}
		s = &joinSource{lim: rate.NewLimiter(rate.Every(joinFailEvery), joinFailBurst)}
		l.sources[key] = s
	}
	s.last = now
	if free := s.lim.TokensAt(now) - float64(s.inflight); free < 1 {
		return nil, time.Duration((1 - free) * float64(joinFailEvery))
	}
	s.inflight++
	return func(failed bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		now := l.now()
		s.inflight--
		s.last = now
		if failed {
			s.lim.AllowN(now, 1)
		}
	}, 0
}

// evict makes room: it forgets sources idle for joinLimitMaxAge (their
// budget is whole again, the same as never seen), or else the one idle
// longest.
func (l *joinLimiter) evict(now time.Time) {
	var oldest string
	for k, s := range l.sources {
		if s.inflight > 0 {
			continue
		}
		if now.Sub(s.last) > joinLimitMaxAge {
			delete(l.sources, k)
		} else if oldest == "" || s.last.Before(l.sources[oldest].last) {
			oldest = k
		}
	}
	if len(l.sources) >= joinLimitSources && oldest != "" {
		delete(l.sources, oldest)
	}
}

// sourceKey is what failed joins are counted by: the IPv4 address, or the
// IPv6 /64 (a host can take any address of its /64).
func sourceKey(ip string) string {
	a := net.ParseIP(ip)
	if a == nil || a.To4() != nil {
		return ip
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
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
		settle, wait := n.joinLimit.admit(ip)
		if settle == nil {
			secs := max(1, int(math.Ceil(wait.Seconds())))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, fmt.Errorf("too many failed joins from %s; retry in %ds", ip, secs))
			return
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() { settle(rec.code >= 400 && rec.code < 500) }()
		h(rec, r)
	}
}
