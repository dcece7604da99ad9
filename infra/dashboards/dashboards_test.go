package dashboards_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/dashboards"
)

// rulesFile holds the recording and alerting rules Prometheus loads.
var rulesFile = filepath.Join("..", infra.RulesFile)

// root is the repository's; its dashboards/ holds the dashboards' JSON,
// which Grafana provisions from.
var root = filepath.Join("..", "..")

// isPrometheus reports whether ds is a Prometheus datasource, whose queries
// the checks parse as PromQL. That it is provisioned is infra's test.
func isPrometheus(ds *dashboards.Datasource) bool { return ds != nil && ds.Type == "prometheus" }

func load(t *testing.T) map[string]*dashboards.Dashboard {
	t.Helper()
	boards, err := dashboards.Load(filepath.Join(root, "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	return boards
}

func loadRules(t *testing.T) dashboards.RuleGroups {
	t.Helper()
	rg, err := dashboards.LoadRules(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	return rg
}

// recorded adds to names the series that the recording rules write, and
// up, which Prometheus writes for every target.
func recorded(t *testing.T, names map[string]bool) map[string]bool {
	t.Helper()
	names["up"] = true
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names[r.Record] = true
			}
		}
	}
	return names
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
// reads. Every range must be $__rate_interval, and with known every name
// must be in it (TestDashboardsOnRealPrometheus: the names Prometheus
// stored from the real binaries).
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
			if known != nil && !known[name] {
				errs = append(errs, fmt.Errorf("metric %q: Prometheus has no such series from the programs, nor a rule that records it", name))
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

// TestLinksLeadToDashboards: every dashboard has a uid of its own and a
// title, and every link to a dashboard (/d/UID) in the Tiltfile and the docs
// names one of them.
func TestLinksLeadToDashboards(t *testing.T) {
	uids := map[string]string{} // uid -> file
	for file, d := range load(t) {
		if d.UID == "" || d.Title == "" || uids[d.UID] != "" {
			t.Errorf("%s: uid %q, title %q: want a uid of its own and a title", file, d.UID, d.Title)
		}
		uids[d.UID] = file
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	links := 0
	for _, f := range append([]string{filepath.Join(root, "Tiltfile"), filepath.Join(root, "README.md")}, docs...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`/d/([\w-]+)`).FindAllStringSubmatch(string(data), -1) {
			links++
			if uids[m[1]] == "" {
				t.Errorf("%s links to dashboard uid %s, which no dashboard has", f, m[1])
			}
		}
	}
	if links == 0 {
		t.Error("no link to a dashboard in the Tiltfile or the docs")
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
			if !isPrometheus(p.Datasource) {
				t.Errorf("%s / %s: datasource %+v, want one of type prometheus", file, p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s / %s: no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				if !isPrometheus(tg.Datasource) {
					t.Errorf("%s / %s / %s: target datasource %+v, want one of type prometheus", file, p.Title, tg.RefID, tg.Datasource)
				}
			}
		}
	}
}

// The names each query reads are checked against a real Prometheus
// (TestDashboardsOnRealPrometheus).
func TestQueriesParse(t *testing.T) {
	used := map[string]bool{}
	for file, d := range load(t) {
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				names, err := checkExpr(tg.Expr, nil)
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
			if !isPrometheus(v.Datasource) {
				t.Errorf("%s: variable %s: datasource %+v, want one of type prometheus", file, v.Name, v.Datasource)
			}
			if _, err := checkExpr(m[1], nil); err != nil {
				t.Errorf("%s: variable %s: %v", file, v.Name, err)
			}
		}
	}
	if !used["echo_request_duration_seconds"] || !used["grpc_server_handled_total"] || !used["go_goroutines"] {
		t.Errorf("the dashboards no longer read the echo, gRPC and Go metrics they exist for: %v", used)
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
}
