package apps

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Health check defaults, as in Kubernetes.
const (
	defaultPeriod           = 10 * time.Second
	defaultTimeout          = 1 * time.Second
	defaultFailureThreshold = 3
)

// probe is one application's running health checks, tied to the spec hash
// it was started for.
type probe struct {
	hash   string
	cancel context.CancelFunc
}

func (p *probe) stop() { p.cancel() }

// startProbe starts health checks for inst unless they already run for
// this spec.
func (r *Reconciler) startProbe(drv Driver, inst Instance) {
	r.mu.Lock()
	s := r.status[inst.App]
	if s == nil || s.hash != inst.Hash || (s.probe != nil && s.probe.hash == inst.Hash) {
		r.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{hash: inst.Hash, cancel: cancel}
	s.probe, s.health = p, nil
	changed, st := r.deriveLocked(s)
	r.mu.Unlock()
	if changed {
		r.notify(inst.App, st)
	}
	go r.runProbe(ctx, p, drv, inst)
}

func (r *Reconciler) stopProbe(app string) {
	r.mu.Lock()
	s := r.status[app]
	if s == nil || s.probe == nil {
		r.mu.Unlock()
		return
	}
	s.probe.stop()
	s.probe, s.health = nil, nil
	changed, st := r.deriveLocked(s)
	r.mu.Unlock()
	if changed {
		r.notify(app, st)
	}
}

func (r *Reconciler) runProbe(ctx context.Context, p *probe, drv Driver, inst Instance) {
	hc := inst.HealthCheck
	period := secondsOr(hc.PeriodSeconds, defaultPeriod)
	timeout := secondsOr(hc.TimeoutSeconds, defaultTimeout)
	threshold := hc.FailureThreshold
	if threshold <= 0 {
		threshold = defaultFailureThreshold
	}
	timer := time.NewTimer(time.Duration(hc.InitialDelaySeconds) * time.Second)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.check(cctx, drv, inst)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			failures = 0
			r.setHealth(inst.App, p, &healthy{ok: true})
		default:
			failures++
			if failures >= threshold {
				r.setHealth(inst.App, p, &healthy{message: fmt.Sprintf("health check failed %d times in a row: %v", failures, err)})
			}
		}
		timer.Reset(period)
	}
}

func secondsOr(s int, def time.Duration) time.Duration {
	if s <= 0 {
		return def
	}
	return time.Duration(s) * time.Second
}

// setHealth records a health result from probe p, unless p has since been
// replaced or stopped.
func (r *Reconciler) setHealth(app string, p *probe, h *healthy) {
	r.mu.Lock()
	s := r.status[app]
	if s == nil || s.probe != p {
		r.mu.Unlock()
		return
	}
	s.health = h
	changed, st := r.deriveLocked(s)
	r.mu.Unlock()
	if changed {
		r.notify(app, st)
	}
}

// check runs inst's health check once.
func (r *Reconciler) check(ctx context.Context, drv Driver, inst Instance) error {
	hc := inst.HealthCheck
	prober, _ := drv.(Prober)
	endpoint := func(port int) (string, error) {
		if prober == nil {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
		}
		return prober.Endpoint(ctx, inst.App, port)
	}
	switch {
	case hc.HTTPGet != nil:
		addr, err := endpoint(hc.HTTPGet.Port)
		if err != nil {
			return err
		}
		path := hc.HTTPGet.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "fleetmesh-health-check")
		resp, err := r.http.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
		}
		return nil
	case hc.TCPSocket != nil:
		addr, err := endpoint(hc.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	case hc.Exec != nil:
		if prober == nil {
			return fmt.Errorf("exec health check: %s driver: %w", inst.Type, ErrUnsupported)
		}
		code, err := prober.Exec(ctx, inst.App, hc.Exec.Command)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("%q exited with status %d", hc.Exec.Command, code)
		}
		return nil
	}
	return fmt.Errorf("health check has no action")
}
