package dashboards_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra/dashboards"
)

// The dashboards and their fixed uids: links and the Tiltfile use them.
var wantUIDs = map[string]string{
	"echo.json":       "echo",
	"grpc.json":       "grpc-red",
	"go-runtime.json": "go-runtime",
}

var prometheusDS = dashboards.Datasource{Type: "prometheus", UID: "prometheus"}

func load(t *testing.T) map[string]*dashboards.Dashboard {
	t.Helper()
	boards, err := dashboards.Load(boardsDir)
	if err != nil {
		t.Fatal(err)
	}
	return boards
}

// rulesFile holds the recording and alerting rules Prometheus loads.
var rulesFile = filepath.Join("..", "prometheus", "rules.yml")

// boardsDir holds the dashboards JSON, which Grafana provisions from.
var boardsDir = filepath.Join("..", "..", "dashboards")

func loadRules(t *testing.T) dashboards.RuleGroups {
	t.Helper()
	rg, err := dashboards.LoadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	return rg
}

// knownMetrics reads testdata/exported-metrics.txt, the one list of series
// names the programs export, and adds the series the recording rules write.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "exported-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	valid := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	s := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !valid.MatchString(line) {
			t.Fatalf("exported-metrics.txt:%d: %q is not a metric name", n, line)
		}
		if known[line] {
			t.Fatalf("exported-metrics.txt:%d: %q listed twice", n, line)
		}
		known[line] = true
	}
	if len(known) == 0 {
		t.Fatal("exported-metrics.txt lists no metric")
	}
	// Series Prometheus itself writes for every target.
	known["up"] = true
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				known[r.Record] = true
			}
		}
	}
	return known
}

// promql parses with the options Prometheus uses by default.
var promql = parser.NewParser(parser.Options{})

// rateInterval stands in for Grafana's $__rate_interval when parsing.
const rateInterval = time.Minute

// substitute replaces Grafana variables for parsing:
// $__rate_interval with 1m, any other variable with the regex .* .
func substitute(expr string) string {
	return dashboards.VarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		if dashboards.VarRef.FindStringSubmatch(ref)[1] == "__rate_interval" {
			return "1m"
		}
		return ".*"
	})
}

// checkExpr parses expr after substitution and returns the metric names it
// reads. Every name must be known and every range must be $__rate_interval.
func checkExpr(expr string, known map[string]bool) ([]string, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("empty expression")
	}
	e, err := promql.ParseExpr(substitute(expr))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var names []string
	var errs []error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName {
					if m.Type != labels.MatchEqual {
						errs = append(errs, fmt.Errorf("selector %s: match the metric name exactly", n))
					}
					name = m.Value
				}
			}
			if !known[name] {
				errs = append(errs, fmt.Errorf("metric %q is not in testdata/exported-metrics.txt", name))
			}
			names = append(names, name)
		case *parser.MatrixSelector:
			if n.Range != rateInterval {
				errs = append(errs, fmt.Errorf("range %s: use $__rate_interval", n.Range))
			}
		case *parser.SubqueryExpr:
			errs = append(errs, errors.New("subquery: not used by these dashboards"))
		}
		return nil
	})
	return names, errors.Join(errs...)
}

func TestDashboardsHaveFixedUIDs(t *testing.T) {
	boards := load(t)
	for file, uid := range wantUIDs {
		d, ok := boards[file]
		if !ok {
			t.Errorf("%s is missing", file)
			continue
		}
		if d.UID != uid {
			t.Errorf("%s: uid = %q, want %q", file, d.UID, uid)
		}
		if d.Title == "" {
			t.Errorf("%s: no title", file)
		}
	}
	for file := range boards {
		if _, ok := wantUIDs[file]; !ok {
			t.Errorf("%s: a new dashboard needs its uid in wantUIDs", file)
		}
	}
}

func TestPanelsQueryPrometheus(t *testing.T) {
	for file, d := range load(t) {
		ids := map[int]bool{}
		for _, p := range d.AllPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", file, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || *p.Datasource != prometheusDS {
				t.Errorf("%s / %s: datasource %+v, want %+v", file, p.Title, p.Datasource, prometheusDS)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s / %s: no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || *tg.Datasource != prometheusDS {
					t.Errorf("%s / %s / %s: target datasource %+v, want %+v", file, p.Title, tg.RefID, tg.Datasource, prometheusDS)
				}
			}
		}
	}
}

func TestQueriesParseAndUseExportedMetrics(t *testing.T) {
	known := knownMetrics(t)
	used := map[string]bool{}
	for file, d := range load(t) {
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				names, err := checkExpr(tg.Expr, known)
				if err != nil {
					t.Errorf("%s / %s / %s: %v\n  expr: %s", file, p.Title, tg.RefID, err, tg.Expr)
				}
				for _, n := range names {
					used[n] = true
				}
			}
		}
		for _, v := range d.Templating.List {
			m := dashboards.LabelValuesQuery.FindStringSubmatch(v.Query)
			if v.Type != "query" || m == nil {
				t.Errorf("%s: variable %s: query %q, want label_values(selector, label)", file, v.Name, v.Query)
				continue
			}
			if v.Datasource == nil || *v.Datasource != prometheusDS {
				t.Errorf("%s: variable %s: datasource %+v, want %+v", file, v.Name, v.Datasource, prometheusDS)
			}
			if _, err := checkExpr(m[1], known); err != nil {
				t.Errorf("%s: variable %s: %v", file, v.Name, err)
			}
		}
	}
	if !used["echo_request_duration_seconds"] || !used["grpc_server_handled_total"] || !used["go_goroutines"] {
		t.Errorf("the dashboards no longer read the echo, gRPC and Go metrics they exist for: %v", used)
	}
}

func TestRulesReadKnownMetrics(t *testing.T) {
	known := knownMetrics(t)
	rules := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			rules++
			name := r.Record + r.Alert
			e, err := promql.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("rule %s: %v", name, err)
				continue
			}
			parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok && !known[vs.Name] {
					t.Errorf("rule %s reads %q, which is neither exported (testdata/exported-metrics.txt) nor recorded", name, vs.Name)
				}
				return nil
			})
		}
	}
	if rules == 0 {
		t.Errorf("%s holds no rule", rulesFile)
	}
}

func TestVariablesAreDefinedAndUsed(t *testing.T) {
	builtin := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	for file, d := range load(t) {
		defined := map[string]bool{}
		for _, v := range d.Templating.List {
			defined[v.Name] = true
		}
		referenced := map[string]bool{}
		var queries []string
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				queries = append(queries, tg.Expr)
			}
		}
		for _, v := range d.Templating.List {
			queries = append(queries, v.Query)
		}
		for _, q := range queries {
			for _, m := range dashboards.VarRef.FindAllStringSubmatch(q, -1) {
				if !builtin[m[1]] {
					referenced[m[1]] = true
				}
			}
		}
		for name := range referenced {
			if !defined[name] {
				t.Errorf("%s: $%s is used and not defined", file, name)
			}
		}
		for name := range defined {
			if !referenced[name] {
				t.Errorf("%s: variable %s is defined and never used", file, name)
			}
		}
	}
	boards := load(t)
	for _, file := range []string{"grpc.json", "go-runtime.json"} {
		var names []string
		for _, v := range boards[file].Templating.List {
			names = append(names, v.Name)
		}
		if !slices.Equal(names, []string{"job", "pod"}) {
			t.Errorf("%s: variables %v, want [job pod]", file, names)
		}
	}
}

func TestKustomizationPacksEveryDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(boardsDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		ConfigMapGenerator []struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	if len(k.ConfigMapGenerator) != 1 || k.ConfigMapGenerator[0].Name != "grafana-dashboards" {
		t.Fatalf("want one generator grafana-dashboards, got %+v", k.ConfigMapGenerator)
	}
	got := slices.Sorted(slices.Values(k.ConfigMapGenerator[0].Files))
	var want []string
	for f := range wantUIDs {
		want = append(want, f)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization files = %v, want %v", got, want)
	}
}

func TestDatasourceUIDMatchesPanels(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "grafana", "datasources.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Datasources []dashboards.Datasource `json:"datasources"`
	}
	if err := yaml.Unmarshal(data, &ds); err != nil {
		t.Fatalf("datasources.yaml: %v", err)
	}
	if !slices.Contains(ds.Datasources, prometheusDS) {
		t.Errorf("infra/grafana/datasources.yaml provisions %+v, not the %+v the panels query", ds.Datasources, prometheusDS)
	}
}
