package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleetmesh/fleetmesh/testenv"
)

// metricsText scrapes a node's /metrics with the admin credential.
func metricsText(f *testenv.Fleet, name string) (string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.CA)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, InsecureSkipVerify: true}}}
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "https://"+f.Member(name).Node.APIAddr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+f.Admin)
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return "", fmt.Errorf("/metrics on %s: HTTP %d: %s", name, res.StatusCode, b)
	}
	return string(b), err
}

// /metrics is Prometheus' text format, as Prometheus' own checker reads it,
// and carries the fleet's view.
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (make deps installs the prometheus package)")
	}
	f := testenv.NewFleet(t, testenv.Options{Gateways: 1, Edges: []testenv.Spec{{Name: "s1", Role: "sensor"}}})
	for _, n := range f.Names() {
		var text string
		testenv.Eventually(t, 20*time.Second, func() error {
			var err error
			if text, err = metricsText(f, n); err != nil {
				return err
			}
			for _, want := range []string{`fleetmesh_fleet_nodes{state="ready"} 2`, "fleetmesh_spec_version", `fleetmesh_fleet_node_up{node="s1",role="sensor"`, "fleetmesh_api_requests_total"} {
				if !strings.Contains(text, want) {
					return fmt.Errorf("%s: /metrics lacks %q", n, want)
				}
			}
			return nil
		})
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s", n, err, out)
		}
	}
}
