package dashboards_test

// TestDashboardsOnRealPrometheus runs a real Prometheus, of the version the
// cluster runs, with its command line and configuration as infra/base
// deploys them, against the real server and client binaries on loopback, and
// evaluates every dashboard query and every rule through its HTTP API.
// docs/OBSERVABILITY.md lists what differs from the cluster.

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/dashboards"
	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/infra/promcheck"
)

// Tuning of the test's Prometheus. The cluster scrapes and evaluates every
// 5s; 1s gets every rate() its two samples within seconds.
const (
	liveInterval     = "1s"
	liveRateInterval = "20s"            // $__rate_interval: twenty 1s samples, plenty for rate()
	liveDeadline     = 90 * time.Second // for every query to return data; ~10s is typical
	startTimeout     = 30 * time.Second // for a process to log the address it listens on
)

// endpoint is one port of one pod behind a Service, as Kubernetes
// endpointslice discovery reports it.
type endpoint struct {
	pod, service, portName string
	addr                   string // host:port
}

func TestDashboardsOnRealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Prometheus, the server and two clients")
	}
	base, err := infra.Build(filepath.Join("..", "base"))
	if err != nil {
		t.Fatal(err)
	}
	namespace := slices.Collect(maps.Keys(base.Namespaces))[0]
	cluster := base.Deployments["prometheus"].Spec.Template.Spec.Containers[0]
	promBin := prometheusBinary(t, cluster.Image)
	dir := t.TempDir()
	if err := proctest.Build(filepath.Join("..", ".."), dir, "server", "client"); err != nil {
		t.Fatal(err)
	}
	programs := startPrograms(t, dir)
	endpoints := programs.endpoints(t)
	promAddr := startPrometheus(t, base.ConfigMaps["prometheus-config"], cluster, promBin, dir, namespace, endpoints)

	pc, err := api.NewClient(api.Config{Address: "http://" + promAddr})
	if err != nil {
		t.Fatal(err)
	}
	papi := promv1.NewAPI(pc)
	began := time.Now()
	waitForTargets(t, papi, namespace, promAddr, endpoints)
	checks := liveChecks(t, papi)

	runCtx, cancel := context.WithTimeout(t.Context(), liveDeadline-time.Since(began))
	defer cancel()
	failed := promcheck.RunUntil(runCtx, checks, time.Second)
	for _, err := range failed {
		t.Error(err)
	}
	t.Logf("%d checks, %d failed, after %v of scraping", len(checks), len(failed), time.Since(began).Round(100*time.Millisecond))

	t.Run("every query and rule reads series of the programs or of a rule", func(t *testing.T) {
		checkNames(t, papi)
	})

	t.Run("one trace id from the client's log to the exemplars", func(t *testing.T) {
		followOneCall(t, papi, filepath.Join(dir, "client"), programs.grpcAddr, programs.server, programs.failClient)
	})
}

// livePrograms are the real server and its two clients, on loopback.
type livePrograms struct {
	server, okClient, failClient *proctest.Process
	grpcAddr                     string // the server's
}

// startPrograms starts the server and two clients built into dir. Names
// longer than 3 bytes are refused: client-ok's "ok" succeeds, client-fail's
// "world" gets INVALID_ARGUMENT, about one call in five.
func startPrograms(t *testing.T, dir string) livePrograms {
	t.Helper()
	server := proctest.Start(t, filepath.Join(dir, "server"), []string{
		"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0", "SERVER_MAX_NAME_BYTES=3"})
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	client := func(name, rate string) *proctest.Process {
		return proctest.Start(t, filepath.Join(dir, "client"), []string{
			"CLIENT_SERVER_ADDR=" + grpcAddr, "CLIENT_METRICS_PORT=0",
			"CLIENT_NAME=" + name, "CLIENT_RATE=" + rate, "CLIENT_CONCURRENCY=2"})
	}
	okClient, failClient := client("ok", "40"), client("world", "10")
	return livePrograms{server: server, okClient: okClient, failClient: failClient, grpcAddr: grpcAddr}
}

// endpoints is every endpoint of the namespace, as pods of the cluster:
// each job's relabelling must keep its own.
func (p livePrograms) endpoints(t *testing.T) []endpoint {
	t.Helper()
	return []endpoint{
		{pod: "server-5f7d8c9b4-x2k4q", service: "server-service", portName: "grpc", addr: p.grpcAddr},
		{pod: "server-5f7d8c9b4-x2k4q", service: "server-metrics-service", portName: "metrics", addr: p.server.Addr(t, "metrics", startTimeout)},
		{pod: "client-6c9f7b5d8-ok7zq", service: "client-metrics-service", portName: "metrics", addr: p.okClient.Addr(t, "metrics", startTimeout)},
		{pod: "client-6c9f7b5d8-fa1lq", service: "client-metrics-service", portName: "metrics", addr: p.failClient.Addr(t, "metrics", startTimeout)},
	}
}

// startPrometheus starts Prometheus with the cluster's command line and
// configuration, scraping endpoints and itself, and returns its address.
// It listens on a free port, which its configuration must name (it scrapes
// itself): start it, read the port from its log, then write the
// configuration with it and make it reload (SIGHUP).
func startPrometheus(t *testing.T, cm *corev1.ConfigMap, cluster corev1.Container, promBin, dir, namespace string, endpoints []endpoint) string {
	t.Helper()
	cfgDir := filepath.Join(dir, "config")
	writeConfig := func(promAddr string) {
		t.Helper()
		eps := append(slices.Clone(endpoints), endpoint{pod: "prometheus-7b8d6f5c9-p8rzv", service: "prometheus", portName: "http", addr: promAddr})
		writeLiveConfig(t, cm, cfgDir, namespace, promAddr, eps)
	}
	writeConfig("127.0.0.1:9")
	prom := proctest.Start(t, promBin, nil, prometheusArgs(t, cluster, filepath.Join(cfgDir, "prometheus.yml"), filepath.Join(dir, "data"), "127.0.0.1:0")...)
	var promAddr string
	proctest.Eventually(t, startTimeout, "Prometheus logs its address", func() bool {
		m := prometheusListening.FindStringSubmatch(prom.Output())
		if m != nil {
			promAddr = m[1]
		}
		return m != nil
	})
	writeConfig(promAddr)
	prom.Signal(t, syscall.SIGHUP)
	return promAddr
}

// waitForTargets waits for Prometheus to be ready with every target
// discovered, relabelled as the cluster's (namespace, pod, service) and up.
func waitForTargets(t *testing.T, papi promv1.API, namespace, promAddr string, endpoints []endpoint) {
	t.Helper()
	targets := map[string][]map[string]string{
		"prometheus": {{"instance": promAddr}},
		"server":     {{"namespace": namespace, "pod": endpoints[1].pod, "service": endpoints[1].service}},
		"client": {
			{"namespace": namespace, "pod": endpoints[2].pod, "service": endpoints[2].service},
			{"namespace": namespace, "pod": endpoints[3].pod, "service": endpoints[3].service},
		},
	}
	if err := proctest.Poll(t.Context(), 100*time.Millisecond, startTimeout, "Prometheus ready, its targets discovered, relabelled and up", func(ctx context.Context) (bool, string) {
		err := promcheck.TargetsUp(ctx, papi, targets)
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Fatal(err)
	}
}

// liveChecks are the checks run against the live Prometheus: every
// dashboard panel (one shows exemplars), every rule, and those below.
func liveChecks(t *testing.T, papi promv1.API) []promcheck.Check {
	t.Helper()
	checks, err := promcheck.Panels(t.Context(), papi, load(t), map[string]string{
		"__rate_interval": liveRateInterval,
		"__interval":      liveInterval,
		"__range":         "5m",
	}, dashboards.TraceIDLabel)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(checks, func(c promcheck.Check) bool { return strings.HasSuffix(c.Name, " exemplars") }) {
		t.Error(`no dashboard target shows exemplars ("exemplar": true)`)
	}
	rules, err := promcheck.Rules(papi, loadRules(t))
	if err != nil {
		t.Fatal(err)
	}
	checks = append(checks, rules...)
	// The failing client's INVALID_ARGUMENTs show on the dashboards, are no
	// server fault, and alert no one.
	check := func(name, expr string, run func(ctx context.Context) error) {
		checks = append(checks, promcheck.Check{Name: name, Expr: expr, Run: run})
	}
	for _, q := range []struct{ name, expr string }{
		{"a caller's errors show in the error ratio", `job:echo_requests_errors:ratio_rate1m{job="server"} > 0`},
		{"and are no server fault", `job:grpc_server_faults:ratio_rate1m{job="server"} == 0`},
	} {
		check(q.name, q.expr, func(ctx context.Context) error { return promcheck.HasSeries(ctx, papi, q.expr) })
	}
	alerts := `ALERTS{alertname=~"EchoServerErrors|EchoClientSeesServerErrors"}`
	check("and alert no one", alerts, func(ctx context.Context) error { return promcheck.NoSeries(ctx, papi, alerts) })
	// The latency histograms arrive native.
	for _, h := range []string{`echo_request_duration_seconds{job="server"}`, `grpc_server_handling_seconds{job="server"}`, `grpc_client_handling_seconds{job="client"}`} {
		check("native histogram "+h, h, func(ctx context.Context) error { return promcheck.NativeHistogram(ctx, papi, h) })
	}
	return checks
}

// followOneCall stops the failing client, lets a short-lived one fail a few
// calls, and follows the last failure's trace id: from that client's log
// to the server's log, to the exemplar of the server's error latency that
// Prometheus scraped and stored.
func followOneCall(t *testing.T, papi promv1.API, clientBin, grpcAddr string, server, failClient *proctest.Process) {
	failClient.Signal(t, syscall.SIGTERM)
	failClient.Wait(t, 10*time.Second)
	caller := proctest.Start(t, clientBin, []string{"CLIENT_SERVER_ADDR=" + grpcAddr, "CLIENT_METRICS_PORT=0",
		"CLIENT_NAME=world", "CLIENT_RATE=2", "CLIENT_DURATION=2s"})
	if code, sig := caller.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("client exit %d (signal %v)", code, sig)
	}
	failures := caller.Events("echo_failed")
	if len(failures) == 0 {
		t.Fatal("the client logged no failed call")
	}
	label := dashboards.TraceIDLabel
	id, _ := failures[len(failures)-1][label].(string)
	if id == "" {
		t.Fatalf("the client's failure line has no %s: %v", label, failures[len(failures)-1])
	}
	// The server's line reaches its log reader a moment after the call's
	// reply reached the client.
	proctest.Eventually(t, 5*time.Second, "the server's refused-call line with "+label+" "+id, func() bool {
		return slices.ContainsFunc(server.Events("call_refused"), func(l map[string]any) bool { return l[label] == id })
	})
	stored := false
	proctest.Eventually(t, 15*time.Second, "Prometheus stores the exemplar", func() bool {
		for _, expr := range []string{`echo_request_duration_seconds_bucket{job="server", result="error"}`, `echo_request_duration_seconds{job="server", result="error"}`} {
			results, _ := papi.QueryExemplars(t.Context(), expr, time.Now().Add(-5*time.Minute), time.Now())
			for _, r := range results {
				for _, e := range r.Exemplars {
					stored = stored || string(e.Labels[model.LabelName(label)]) == id
				}
			}
		}
		return stored
	})
	t.Logf("trace id %s: in the client's log, the server's log and an exemplar of the server's error latency in Prometheus", id)
}

// checkNames checks that every dashboard query, variable and rule reads
// only series names that Prometheus stored from the real binaries, or that
// a recording rule writes: a misspelt name in a branch that another
// branch's data hides is caught here.
func checkNames(t *testing.T, papi promv1.API) {
	values, _, _, err := papi.LabelValues(t.Context(), model.MetricNameLabel, nil, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, v := range values {
		known[string(v)] = true
	}
	recorded(t, known)
	for file, d := range load(t) {
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				if _, err := checkExpr(tg.Expr, known); err != nil {
					t.Errorf("%s / %s / %s: %v", file, p.Title, tg.RefID, err)
				}
			}
		}
		for _, v := range d.Templating.List {
			if m := dashboards.LabelValuesQuery.FindStringSubmatch(v.Query); m != nil {
				if _, err := checkExpr(m[1], known); err != nil {
					t.Errorf("%s: variable %s: %v", file, v.Name, err)
				}
			}
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			e, err := promql.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("rule %s%s: %v", r.Record, r.Alert, err)
				continue
			}
			parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok && !known[vs.Name] {
					t.Errorf("rule %s%s reads %q, which Prometheus has neither from the programs nor from a rule", r.Record, r.Alert, vs.Name)
				}
				return nil
			})
		}
	}
}
