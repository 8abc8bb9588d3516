package node

import (
	"net/http"
	"strconv"
	"time"

	"github.com/fleetmesh/fleetmesh/mesh"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is one node's Prometheus registry. Each node has its own (a test
// fleet runs many nodes in one process), with gauges computed at scrape time
// from the node's view.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// specFetches counts an edge's spec updates from gateways, by kind
	// (delta or full).
	specFetches *prometheus.CounterVec
	handler     http.Handler
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetmesh_api_requests_total", Help: "API requests answered, by method and status code.",
	}, []string{"method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "fleetmesh_api_request_duration_seconds", Help: "API request latency.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"method"})
	m.specFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fleetmesh_spec_fetches_total", Help: "Spec updates this node fetched from gateways, by kind: delta (the changes since its copy) or full (the whole spec).",
	}, []string{"kind"})
	reg.MustRegister(m.requests, m.latency, m.specFetches, collectors.NewGoCollector(), &nodeCollector{n: n})
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		h.ServeHTTP(rec, r)
		m.requests.WithLabelValues(r.Method, strconv.Itoa(rec.code)).Inc()
		m.latency.WithLabelValues(r.Method).Observe(time.Since(start).Seconds())
	})
}

// specFetched counts one spec update of kind "delta" or "full".
func (n *Node) specFetched(kind string) {
	if n.metrics != nil {
		n.metrics.specFetches.WithLabelValues(kind).Inc()
	}
}

func (n *Node) handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !n.cfg.MetricsOpen {
		if code, err := n.authorize(r, false); err != nil {
			writeError(w, code, err)
			return
		}
	}
	n.metrics.handler.ServeHTTP(w, r)
}

var (
	descMembers  = prometheus.NewDesc("fleetmesh_fleet_nodes", "Devices in the fleet by state, as this node sees them.", []string{"state"}, nil)
	descSpec     = prometheus.NewDesc("fleetmesh_spec_version", "Spec version applied on this node.", nil, nil)
	descLeader   = prometheus.NewDesc("fleetmesh_raft_leader", "1 if this node is the Raft leader.", nil, nil)
	descKnown    = prometheus.NewDesc("fleetmesh_raft_known_leader", "1 if this node knows a Raft leader.", nil, nil)
	descContact  = prometheus.NewDesc("fleetmesh_leader_last_contact_seconds", "Seconds since this node last heard of the leader.", nil, nil)
	descCPU      = prometheus.NewDesc("fleetmesh_node_cpu_percent", "Host CPU use.", nil, nil)
	descMem      = prometheus.NewDesc("fleetmesh_node_memory_percent", "Host memory use.", nil, nil)
	descDisk     = prometheus.NewDesc("fleetmesh_node_disk_percent", "Use of the disk holding the data dir.", nil, nil)
	descTemp     = prometheus.NewDesc("fleetmesh_node_temperature_celsius", "SoC temperature, where the board has a sensor.", nil, nil)
	descUp       = prometheus.NewDesc("fleetmesh_node_uptime_seconds", "Agent uptime.", nil, nil)
	descInfo     = prometheus.NewDesc("fleetmesh_node_info", "This node's identity.", []string{"name", "role", "site", "version"}, nil)
	descHealthOK = prometheus.NewDesc("fleetmesh_fleet_node_up", "1 if a device is online, as this node sees it.", []string{"node", "role", "site"}, nil)
	// Gateways only.
	descCandidacy = prometheus.NewDesc("fleetmesh_raft_candidacies_total", "Times this gateway stood as a Raft candidate (pre-vote included) since it started: it missed its leader's heartbeats.", nil, nil)
	descLeaderChg = prometheus.NewDesc("fleetmesh_raft_leader_changes_total", "Times the Raft leader this gateway knows changed since it started.", nil, nil)
	descHalted    = prometheus.NewDesc("fleetmesh_raft_fsm_halted", "1 if this gateway's binary is too old for the fleet's Raft log and stopped applying it.", nil, nil)
)

type nodeCollector struct{ n *Node }

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descSpec, descLeader, descKnown, descContact, descCPU, descMem, descDisk, descTemp, descUp, descInfo, descHealthOK, descCandidacy, descLeaderChg, descHalted} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	counts := map[string]int{}
	for _, s := range mesh.States {
		counts[s] = 0
	}
	for _, v := range n.nodeViews() {
		counts[v.State]++
		up := 0.0
		if v.State != mesh.StateOffline && v.State != mesh.StateProvisioning {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealthOK, prometheus.GaugeValue, up, v.Name, v.Role, v.Site)
	}
	for s, k := range counts {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(k), s)
	}
	ch <- prometheus.MustNewConstMetric(descSpec, prometheus.GaugeValue, float64(n.specVersion()))
	leader, lc := n.leaderView()
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, b2f(n.IsLeader()))
	ch <- prometheus.MustNewConstMetric(descKnown, prometheus.GaugeValue, b2f(leader != ""))
	ch <- prometheus.MustNewConstMetric(descContact, prometheus.GaugeValue, lc.Seconds())
	if n.store != nil {
		rc := n.store.Counters()
		ch <- prometheus.MustNewConstMetric(descCandidacy, prometheus.CounterValue, float64(rc.Candidacies))
		ch <- prometheus.MustNewConstMetric(descLeaderChg, prometheus.CounterValue, float64(rc.LeaderChanges))
		ch <- prometheus.MustNewConstMetric(descHalted, prometheus.GaugeValue, b2f(n.store.Halted() != nil))
	}
	s := sharedSampler.sample(n.cfg.DataDir)
	ch <- prometheus.MustNewConstMetric(descCPU, prometheus.GaugeValue, s.CPU)
	ch <- prometheus.MustNewConstMetric(descMem, prometheus.GaugeValue, s.Mem)
	ch <- prometheus.MustNewConstMetric(descDisk, prometheus.GaugeValue, s.Disk)
	if s.TempC != nil {
		ch <- prometheus.MustNewConstMetric(descTemp, prometheus.GaugeValue, *s.TempC)
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, time.Since(n.started).Seconds())
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, n.state.Name, n.state.Role, n.state.Site, Version)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
