package dashboards_test

// TestDashboardsOnRealPrometheus runs a real Prometheus, of the version the
// cluster runs, against the real server and client binaries on loopback, with
// a configuration derived from infra/prometheus/prometheus.yml, and evaluates
// every dashboard query and every rule through its HTTP API.
// docs/OBSERVABILITY.md lists what differs from the cluster.

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// Tuning of the test's Prometheus. The cluster scrapes and evaluates every
// 5s; 1s gets every rate() its two samples within seconds.
const (
	liveInterval     = "1s"
	liveRateInterval = "20s"                // $__rate_interval: twenty 1s samples, plenty for rate()
	liveDeadline     = 90 * time.Second     // for every query to return data; ~10s is typical
	namespace        = "echo"               // where the cluster's discovery looks
	requestIDLabel   = "request_id"         // the exemplar label of the echo latency histogram
	errorAlert       = "EchoHighErrorRatio" // the failing client's calls make it pending
)

var (
	prometheusYML      = filepath.Join("..", "infra", "prometheus", "prometheus.yml")
	prometheusManifest = filepath.Join("..", "infra", "base", "prometheus.yaml")
)

// endpoint is one port of one pod behind a Service, as Kubernetes
// endpointslice discovery reports it.
type endpoint struct {
	pod, service, portName string
	port                   int
}

func TestDashboardsOnRealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Prometheus, the server and two clients")
	}
	dir := t.TempDir()
	promBin := prometheusBinary(t)
	buildPrograms(t, dir)

	grpcPort, serverMetrics, okMetrics, failMetrics, promPort := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	// Names longer than 3 bytes are refused: client-ok's "ok" succeeds,
	// client-fail's "world" gets INVALID_ARGUMENT, about one call in five.
	startProcess(t, filepath.Join(dir, "server"), []string{
		"SERVER_GRPC_PORT=" + strconv.Itoa(grpcPort), "SERVER_METRICS_PORT=" + strconv.Itoa(serverMetrics), "SERVER_MAX_NAME_BYTES=3"})
	client := func(metricsPort int, name, rate string) {
		startProcess(t, filepath.Join(dir, "client"), []string{
			"CLIENT_SERVER_ADDR=127.0.0.1:" + strconv.Itoa(grpcPort), "CLIENT_METRICS_PORT=" + strconv.Itoa(metricsPort),
			"CLIENT_NAME=" + name, "CLIENT_RATE=" + rate, "CLIENT_CONCURRENCY=2", "CLIENT_LOG_LEVEL=error"})
	}
	client(okMetrics, "ok", "40")
	client(failMetrics, "world", "10")

	// Every endpoint of the namespace: each job's relabelling must keep its own.
	endpoints := []endpoint{
		{pod: "server-5f7d8c9b4-x2k4q", service: "server-service", portName: "grpc", port: grpcPort},
		{pod: "server-5f7d8c9b4-x2k4q", service: "server-metrics-service", portName: "metrics", port: serverMetrics},
		{pod: "client-6c9f7b5d8-ok7zq", service: "client-metrics-service", portName: "metrics", port: okMetrics},
		{pod: "client-6c9f7b5d8-fa1lq", service: "client-metrics-service", portName: "metrics", port: failMetrics},
		{pod: "prometheus-7b8d6f5c9-p8rzv", service: "prometheus", portName: "http", port: promPort},
	}
	promAddr := "127.0.0.1:" + strconv.Itoa(promPort)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, liveConfig(t, promAddr, endpoints), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, promBin, nil, prometheusArgs(t, cfgFile, filepath.Join(dir, "data"), promAddr)...)

	api := &promAPI{base: "http://" + promAddr, client: &http.Client{Timeout: 5 * time.Second}}
	began := time.Now()
	poll(t, 30*time.Second, "Prometheus ready", func() error {
		resp, err := api.client.Get(api.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	poll(t, 30*time.Second, "targets discovered, relabelled and up", func() error {
		return checkTargets(api, map[string][]map[string]string{
			"prometheus": {{"instance": promAddr}},
			"server":     {{"namespace": namespace, "pod": endpoints[1].pod, "service": endpoints[1].service}},
			"client": {
				{"namespace": namespace, "pod": endpoints[2].pod, "service": endpoints[2].service},
				{"namespace": namespace, "pod": endpoints[3].pod, "service": endpoints[3].service},
			},
		})
	})

	checks := dashboardChecks(t, api)
	checks = append(checks, ruleChecks(t, api)...)
	var failed []error
	for time.Since(began) < liveDeadline {
		failed = failed[:0]
		for _, c := range checks {
			if err := c.run(); err != nil {
				failed = append(failed, fmt.Errorf("%s: %w\n  expr: %s", c.name, err, c.expr))
			}
		}
		if len(failed) == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	for _, err := range failed {
		t.Error(err)
	}
	t.Logf("%d checks, %d failed, after %v of scraping", len(checks), len(failed), time.Since(began).Round(100*time.Millisecond))
}

// check is one expression evaluated against the test's Prometheus.
type check struct {
	name string // dashboard / panel / refId, or rule
	expr string
	run  func() error
}

// dashboardChecks resolves every dashboard's template variables through the
// API and returns a check per panel target (and per exemplar query).
func dashboardChecks(t *testing.T, api *promAPI) []check {
	t.Helper()
	var checks []check
	boards := load(t)
	exemplarTargets := 0
	for _, file := range slices.Sorted(mapKeys(boards)) {
		d := boards[file]
		values := map[string]string{
			"__rate_interval": liveRateInterval,
			"__interval":      liveInterval,
			"__range":         "5m",
		}
		for _, v := range d.Templating.List {
			m := labelValues.FindStringSubmatch(v.Query)
			if m == nil {
				t.Fatalf("%s: variable %s: query %q is not label_values(selector, label)", file, v.Name, v.Query)
			}
			got, err := api.labelValues(m[2], expand(m[1], values))
			if err != nil || len(got) == 0 {
				t.Fatalf("%s: variable %s: %s gives no value (%v)", file, v.Name, v.Query, err)
			}
			values[v.Name] = multiValue(got)
		}
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				expr := expand(tg.Expr, values)
				name := fmt.Sprintf("%s / %q / %s", file, p.Title, tg.RefID)
				checks = append(checks, check{name: name, expr: expr, run: func() error { return api.hasSeries(expr) }})
				if tg.Exemplar {
					exemplarTargets++
					checks = append(checks, check{name: name + " exemplars", expr: expr, run: func() error {
						return api.hasExemplars(expr, requestIDLabel)
					}})
				}
			}
		}
	}
	if exemplarTargets == 0 {
		t.Error("no dashboard target shows exemplars (\"exemplar\": true)")
	}
	return checks
}

// ruleChecks checks that Prometheus loaded every rule group of the rules
// files without error, that every recording rule writes series, that the
// left-hand side of every alert's comparison has data, and that the failing
// calls make the error-ratio alert pending (or firing).
func ruleChecks(t *testing.T, api *promAPI) []check {
	t.Helper()
	var groups []string
	var checks []check
	for _, g := range loadRules(t).Groups {
		groups = append(groups, g.Name)
		for _, r := range g.Rules {
			if r.Record != "" {
				checks = append(checks, check{name: "recording rule " + r.Record, expr: r.Record, run: func() error { return api.hasSeries(r.Record) }})
				continue
			}
			e, err := promql.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("alert %s: %v", r.Alert, err)
			}
			lhs := e
			if b, ok := e.(*parser.BinaryExpr); ok && b.Op.IsComparisonOperator() {
				lhs = b.LHS
			}
			checks = append(checks, check{name: "alert " + r.Alert + " (left of its threshold)", expr: lhs.String(),
				run: func() error { return api.hasSeries(lhs.String()) }})
		}
	}
	checks = append(checks, check{name: "rule groups loaded and healthy", expr: "GET /api/v1/rules", run: func() error {
		return api.rulesHealthy(groups)
	}})
	active := fmt.Sprintf(`ALERTS{alertname=%q, alertstate=~"pending|firing"}`, errorAlert)
	checks = append(checks, check{name: "alert " + errorAlert + " active under failing calls", expr: active,
		run: func() error { return api.hasSeries(active) }})
	return checks
}

// expand replaces Grafana variables with values; an unknown one stays.
func expand(expr string, values map[string]string) string {
	return varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		if v, ok := values[varRef.FindStringSubmatch(ref)[1]]; ok {
			return v
		}
		return ref
	})
}

// multiValue formats the values of a multi-value variable with every value
// selected, as Grafana does for a Prometheus regex matcher.
func multiValue(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = regexp.QuoteMeta(v)
	}
	if len(quoted) == 1 {
		return quoted[0]
	}
	return "(" + strings.Join(quoted, "|") + ")"
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// liveConfig derives the test's configuration from prometheus.yml: the same
// jobs, relabelling and rules, with Kubernetes discovery replaced by static
// targets that carry the discovery labels the relabelling reads, shorter
// intervals, and absolute rule file paths.
func liveConfig(t *testing.T, promAddr string, endpoints []endpoint) []byte {
	t.Helper()
	data, err := os.ReadFile(prometheusYML)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", prometheusYML, err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
	}
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = liveInterval, liveInterval, liveInterval
	cfg["global"] = global

	rules, _ := cfg["rule_files"].([]any)
	if len(rules) == 0 {
		t.Fatalf("%s: no rule_files", prometheusYML)
	}
	for i, f := range rules {
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(prometheusYML), f.(string)))
		if err != nil {
			t.Fatal(err)
		}
		rules[i] = abs
	}

	jobs, _ := cfg["scrape_configs"].([]any)
	for _, j := range jobs {
		job := j.(map[string]any)
		name := job["job_name"]
		delete(job, "scrape_interval")
		delete(job, "scrape_timeout")
		if sds, ok := job["kubernetes_sd_configs"].([]any); ok {
			delete(job, "kubernetes_sd_configs")
			if len(sds) != 1 {
				t.Fatalf("job %s: %d kubernetes_sd_configs, the test stands in for one", name, len(sds))
			}
			sd := sds[0].(map[string]any)
			names, _ := sd["namespaces"].(map[string]any)["names"].([]any)
			if sd["role"] != "endpointslice" || !slices.Equal(names, []any{namespace}) {
				t.Fatalf("job %s: discovery %v: the test stands in for role endpointslice in namespace %s only", name, sd, namespace)
			}
			var groups []any
			for _, ep := range endpoints {
				groups = append(groups, map[string]any{
					"targets": []any{"127.0.0.1:" + strconv.Itoa(ep.port)},
					"labels": map[string]any{
						"__meta_kubernetes_namespace":               namespace,
						"__meta_kubernetes_pod_name":                ep.pod,
						"__meta_kubernetes_service_name":            ep.service,
						"__meta_kubernetes_endpointslice_port_name": ep.portName,
					},
				})
			}
			job["static_configs"] = groups
			continue
		}
		// Prometheus scraping itself: localhost:9090 is the test's listener.
		statics, _ := job["static_configs"].([]any)
		for _, s := range statics {
			sc := s.(map[string]any)
			for i, tg := range sc["targets"].([]any) {
				if tg != "localhost:9090" {
					t.Fatalf("job %s: static target %v: the test knows only localhost:9090", name, tg)
				}
				sc["targets"].([]any)[i] = promAddr
			}
		}
		if len(statics) == 0 {
			t.Fatalf("job %s: neither kubernetes_sd_configs nor static_configs: teach the test its targets", name)
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// prometheusContainer is the part of the Prometheus Deployment the test reads.
type prometheusContainer struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
}

// clusterPrometheus returns the prometheus container of infra's Deployment.
func clusterPrometheus(t *testing.T) prometheusContainer {
	t.Helper()
	data, err := os.ReadFile(prometheusManifest)
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []prometheusContainer `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%s: %v", prometheusManifest, err)
		}
		if obj.Kind != "Deployment" {
			continue
		}
		for _, c := range obj.Spec.Template.Spec.Containers {
			if c.Name == "prometheus" {
				return c
			}
		}
	}
	t.Fatalf("%s: no Deployment with a prometheus container", prometheusManifest)
	return prometheusContainer{}
}

// prometheusArgs is the cluster's command line with the file paths and the
// listen address of the test.
func prometheusArgs(t *testing.T, cfgFile, dataDir, addr string) []string {
	t.Helper()
	local := map[string]string{
		"--config.file":        cfgFile,
		"--storage.tsdb.path":  dataDir,
		"--web.listen-address": addr,
	}
	var args []string
	for _, a := range clusterPrometheus(t).Args {
		flag, _, _ := strings.Cut(a, "=")
		v, ok := local[flag]
		if !ok {
			args = append(args, a)
			continue
		}
		args = append(args, flag+"="+v)
		delete(local, flag)
	}
	if len(local) != 0 {
		t.Fatalf("%s: prometheus args lack %v", prometheusManifest, slices.Sorted(mapKeys(local)))
	}
	return args
}

// prometheusBinary returns the Prometheus server built from the module go.mod
// pins (a go tool, cached by the go command), after checking that its version
// matches the cluster's image in major and minor: image v3.16.x is module
// v0.316.x.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	image := clusterPrometheus(t).Image
	m := regexp.MustCompile(`^prom/prometheus:v(\d+)\.(\d+)\.\d+$`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("%s: image %q is not prom/prometheus:vX.Y.Z", prometheusManifest, image)
	}
	minor, _ := strconv.Atoi(m[2])
	wantModule := fmt.Sprintf("v0.%s%02d.", m[1], minor)

	start := time.Now()
	cmd := exec.Command("go", "tool", "-n", "prometheus")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool -n prometheus: %v\n%s", err, stderr.String())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Logf("built Prometheus in %v (cached from now on)", took.Round(time.Second))
	}
	bin := strings.TrimSpace(string(out))
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	version := ""
	for _, mod := range append([]*debug.Module{&info.Main}, info.Deps...) {
		if mod.Path == "github.com/prometheus/prometheus" {
			version = mod.Version
		}
	}
	if !strings.HasPrefix(version, wantModule) {
		t.Fatalf("Prometheus built from module version %q, want %s* to match the cluster's %s", version, wantModule, image)
	}
	return bin
}

// buildPrograms builds the server and the client into dir.
func buildPrograms(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"example.com/grpc-metrics/services/server", "example.com/grpc-metrics/services/client")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the programs: %v\n%s", err, out)
	}
}

// process is a program started by the test, killed when the test ends.
type process struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// startProcess runs path with args and env (added to a clean environment).
// The process is killed by its PID at cleanup, and dies with the test binary
// if that is killed first (diesWithParent).
func startProcess(t *testing.T, path string, env []string, args ...string) {
	t.Helper()
	p := &process{}
	cmd := exec.Command(path, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdout, cmd.Stderr = p, p
	diesWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait() //nolint:errcheck // the exit status is logged below when it matters
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
			if !t.Failed() {
				t.Errorf("%s exited early: %v", filepath.Base(path), cmd.ProcessState)
			}
		default:
			cmd.Process.Kill() //nolint:errcheck // it may have just exited
			<-done
		}
		if t.Failed() {
			p.mu.Lock()
			out := p.out.String()
			p.mu.Unlock()
			if len(out) > 4000 {
				out = "..." + out[len(out)-4000:]
			}
			t.Logf("%s (pid %d) output:\n%s", filepath.Base(path), cmd.Process.Pid, out)
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// poll calls f every 200ms until it returns nil, or fails the test after
// timeout with f's last error.
func poll(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// promAPI is a client of the Prometheus HTTP API.
type promAPI struct {
	base   string
	client *http.Client
}

// get calls GET path?params and decodes the response's data into data. It
// returns an error for a failed call and for any warning or info annotation
// (rate() over a gauge, a quantile without le, ...).
func (a *promAPI) get(path string, params url.Values, data any) error {
	resp, err := a.client.Get(a.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status   string          `json:"status"`
		Data     json.RawMessage `json:"data"`
		Error    string          `json:"error"`
		Warnings []string        `json:"warnings"`
		Infos    []string        `json:"infos"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, body.Error)
	}
	if notes := append(body.Warnings, body.Infos...); len(notes) > 0 {
		return fmt.Errorf("annotations: %s", strings.Join(notes, "; "))
	}
	return json.Unmarshal(body.Data, data)
}

// hasSeries evaluates expr now and fails unless it returns a series.
func (a *promAPI) hasSeries(expr string) error {
	var data struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := a.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return err
	}
	if len(data.Result) == 0 {
		return errors.New("no series (the panel shows No data)")
	}
	return nil
}

// hasExemplars fails unless expr's selectors have an exemplar with label
// name in the last five minutes.
func (a *promAPI) hasExemplars(expr, name string) error {
	now := time.Now()
	var data []struct {
		Exemplars []struct {
			Labels map[string]string `json:"labels"`
		} `json:"exemplars"`
	}
	params := url.Values{"query": {expr}, "start": {unix(now.Add(-5 * time.Minute))}, "end": {unix(now)}}
	if err := a.get("/api/v1/query_exemplars", params, &data); err != nil {
		return err
	}
	n := 0
	for _, s := range data {
		for _, e := range s.Exemplars {
			if e.Labels[name] != "" {
				n++
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("no exemplar with a %s label", name)
	}
	return nil
}

// labelValues answers Grafana's label_values(selector, label).
func (a *promAPI) labelValues(label, selector string) ([]string, error) {
	var values []string
	err := a.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {selector}}, &values)
	return values, err
}

// rulesHealthy fails unless exactly the groups named are loaded and every
// rule in them has been evaluated without error.
func (a *promAPI) rulesHealthy(want []string) error {
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := a.get("/api/v1/rules", nil, &data); err != nil {
		return err
	}
	var got []string
	var errs []error
	for _, g := range data.Groups {
		got = append(got, g.Name)
		for _, r := range g.Rules {
			if r.Health != "ok" {
				errs = append(errs, fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError))
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		errs = append(errs, fmt.Errorf("groups %v loaded, want %v", got, want))
	}
	return errors.Join(errs...)
}

// checkTargets fails unless each job's active targets are up and carry the
// labels wanted, one target per entry.
func checkTargets(a *promAPI, want map[string][]map[string]string) error {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := a.get("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return err
	}
	got := map[string][]map[string]string{}
	var errs []error
	for _, tg := range data.ActiveTargets {
		job := tg.Labels["job"]
		if tg.Health != "up" {
			errs = append(errs, fmt.Errorf("job %s target %s: %s %s", job, tg.Labels["instance"], tg.Health, tg.LastError))
		}
		got[job] = append(got[job], tg.Labels)
	}
	for job, targets := range want {
		if len(got[job]) != len(targets) {
			errs = append(errs, fmt.Errorf("job %s: %d active targets, want %d: %v", job, len(got[job]), len(targets), got[job]))
			continue
		}
		for _, w := range targets {
			if !slices.ContainsFunc(got[job], func(l map[string]string) bool { return hasLabels(l, w) }) {
				errs = append(errs, fmt.Errorf("job %s: no target with labels %v in %v", job, w, got[job]))
			}
		}
	}
	for job := range got {
		if _, ok := want[job]; !ok {
			errs = append(errs, fmt.Errorf("unexpected job %s", job))
		}
	}
	return errors.Join(errs...)
}

func hasLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func unix(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64)
}
