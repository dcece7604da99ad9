// Package promcheck checks a running Prometheus through its HTTP API: that
// every dashboard query returns data, that every rule is loaded and writes or
// reads series, that targets are up. The real-Prometheus test of the
// dashboards and the cluster checks share it.
package promcheck

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"example.com/grpc-metrics/infra/dashboards"
)

// Check is one expression evaluated against a Prometheus.
type Check struct {
	Name string // dashboard / panel / refId, or rule
	Expr string
	Run  func(context.Context) error
}

// HasSeries evaluates expr now and fails unless it returns a series. A
// warning or info annotation (rate() over a gauge, a quantile without le)
// fails it too.
func HasSeries(ctx context.Context, api promv1.API, expr string) error {
	v, warnings, infos, err := api.Query(ctx, expr, time.Now())
	if err != nil {
		return err
	}
	if notes := append(warnings, infos...); len(notes) > 0 {
		return fmt.Errorf("annotations: %s", strings.Join(notes, "; "))
	}
	n := 0
	switch v := v.(type) {
	case model.Vector:
		n = len(v)
	case model.Matrix:
		n = len(v)
	case *model.Scalar, *model.String:
		n = 1
	}
	if n == 0 {
		return errors.New("no series (the panel shows No data)")
	}
	return nil
}

// NoSeries evaluates expr now and fails if it returns any series.
func NoSeries(ctx context.Context, api promv1.API, expr string) error {
	v, _, _, err := api.Query(ctx, expr, time.Now())
	if err != nil {
		return err
	}
	if vec, ok := v.(model.Vector); !ok || len(vec) > 0 {
		return fmt.Errorf("want no series, got %v", v)
	}
	return nil
}

// NativeHistogram fails unless expr returns series and each holds a native
// histogram sample.
func NativeHistogram(ctx context.Context, api promv1.API, expr string) error {
	v, _, _, err := api.Query(ctx, expr, time.Now())
	if err != nil {
		return err
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) == 0 {
		return fmt.Errorf("no series (%v)", v)
	}
	for _, s := range vec {
		if s.Histogram == nil {
			return fmt.Errorf("%v holds a float, not a native histogram", s.Metric)
		}
	}
	return nil
}

// hasExemplars fails unless expr's selectors have an exemplar with the label
// name in the last five minutes.
func hasExemplars(ctx context.Context, api promv1.API, expr, name string) error {
	now := time.Now()
	results, err := api.QueryExemplars(ctx, expr, now.Add(-5*time.Minute), now)
	if err != nil {
		return err
	}
	for _, r := range results {
		for _, e := range r.Exemplars {
			if e.Labels[model.LabelName(name)] != "" {
				return nil
			}
		}
	}
	return fmt.Errorf("no exemplar with a %s label", name)
}

// rulesHealthy fails unless exactly the groups named are loaded and every
// rule in them has been evaluated without error.
func rulesHealthy(ctx context.Context, api promv1.API, want []string) error {
	rules, err := api.Rules(ctx, nil)
	if err != nil {
		return err
	}
	var got []string
	var errs []error
	for _, g := range rules.Groups {
		got = append(got, g.Name)
		for _, r := range g.Rules {
			switch r := r.(type) {
			case promv1.RecordingRule:
				if r.Health != promv1.RuleHealthGood {
					errs = append(errs, fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError))
				}
			case promv1.AlertingRule:
				if r.Health != promv1.RuleHealthGood {
					errs = append(errs, fmt.Errorf("alert %s: health %q %s", r.Name, r.Health, r.LastError))
				}
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		errs = append(errs, fmt.Errorf("groups %v loaded, want %v", got, want))
	}
	return errors.Join(errs...)
}

// TargetsUp fails unless each job's active targets are up and carry the
// labels wanted, one target per entry, and no other job has targets.
func TargetsUp(ctx context.Context, api promv1.API, want map[string][]map[string]string) error {
	targets, err := api.Targets(ctx)
	if err != nil {
		return err
	}
	got := map[string][]model.LabelSet{}
	var errs []error
	for _, tg := range targets.Active {
		job := string(tg.Labels["job"])
		if tg.Health != promv1.HealthGood {
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
			if !slices.ContainsFunc(got[job], func(l model.LabelSet) bool { return hasLabels(l, w) }) {
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

func hasLabels(got model.LabelSet, want map[string]string) bool {
	for k, v := range want {
		if string(got[model.LabelName(k)]) != v {
			return false
		}
	}
	return true
}

// Panels returns a check per target of every panel of boards, and one more
// for the exemplars of each target that shows them. The dashboards'
// label_values variables are resolved through api with every value selected;
// fixed gives the others ($__rate_interval and the like).
func Panels(ctx context.Context, api promv1.API, boards map[string]*dashboards.Dashboard, fixed map[string]string, exemplarLabel string) ([]Check, error) {
	var checks []Check
	for _, file := range slices.Sorted(maps.Keys(boards)) {
		d := boards[file]
		values := map[string]string{}
		maps.Copy(values, fixed)
		for _, v := range d.Templating.List {
			m := dashboards.LabelValuesQuery.FindStringSubmatch(v.Query)
			if m == nil {
				return nil, fmt.Errorf("%s: variable %s: query %q is not label_values(selector, label)", file, v.Name, v.Query)
			}
			got, _, _, err := api.LabelValues(ctx, m[2], []string{dashboards.Expand(m[1], values)}, time.Time{}, time.Time{})
			if err != nil {
				return nil, fmt.Errorf("%s: variable %s: %w", file, v.Name, err)
			}
			if len(got) == 0 {
				return nil, fmt.Errorf("%s: variable %s: %s gives no value", file, v.Name, v.Query)
			}
			strs := make([]string, len(got))
			for i, lv := range got {
				strs[i] = string(lv)
			}
			values[v.Name] = dashboards.MultiValue(strs)
		}
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				expr := dashboards.Expand(tg.Expr, values)
				name := fmt.Sprintf("%s / %q / %s", file, p.Title, tg.RefID)
				checks = append(checks, check(name, expr, func(ctx context.Context) error { return HasSeries(ctx, api, expr) }))
				if tg.Exemplar {
					checks = append(checks, check(name+" exemplars", expr, func(ctx context.Context) error {
						return hasExemplars(ctx, api, expr, exemplarLabel)
					}))
				}
			}
		}
	}
	return checks, nil
}

// check builds a Check.
func check(name, expr string, run func(context.Context) error) Check {
	return Check{Name: name, Expr: expr, Run: run}
}

// Rules returns a check per recording rule (it writes series), per alert
// (the left-hand side of its comparison has data) and one that every group
// is loaded and healthy.
func Rules(api promv1.API, rg dashboards.RuleGroups) ([]Check, error) {
	var groups []string
	var checks []Check
	p := parser.NewParser(parser.Options{})
	for _, g := range rg.Groups {
		groups = append(groups, g.Name)
		for _, r := range g.Rules {
			if r.Record != "" {
				checks = append(checks, check("recording rule "+r.Record, r.Record, func(ctx context.Context) error {
					return HasSeries(ctx, api, r.Record)
				}))
				continue
			}
			e, err := p.ParseExpr(r.Expr)
			if err != nil {
				return nil, fmt.Errorf("alert %s: %w", r.Alert, err)
			}
			lhs := e
			if b, ok := e.(*parser.BinaryExpr); ok && b.Op.IsComparisonOperator() {
				lhs = b.LHS
			}
			checks = append(checks, check("alert "+r.Alert+" (left of its threshold)", lhs.String(), func(ctx context.Context) error {
				return HasSeries(ctx, api, lhs.String())
			}))
		}
	}
	checks = append(checks, check("rule groups loaded and healthy", "GET /api/v1/rules", func(ctx context.Context) error {
		return rulesHealthy(ctx, api, groups)
	}))
	return checks, nil
}

// RunUntil runs every check, again every interval, until all pass in one
// round or ctx ends; it returns the failures of the last round.
func RunUntil(ctx context.Context, checks []Check, interval time.Duration) []error {
	for {
		var failed []error
		for _, c := range checks {
			if err := c.Run(ctx); err != nil {
				failed = append(failed, fmt.Errorf("%s: %w\n  expr: %s", c.Name, err, c.Expr))
			}
		}
		if len(failed) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return failed
		case <-time.After(interval):
		}
	}
}
