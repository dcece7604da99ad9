//go:build e2e

package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/dashboards"
	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/promcheck"
)

// smokeTimeout bounds the wait for scrapes and data: a fresh deployment
// needs a minute of samples for the 1m rates.
const smokeTimeout = 2 * time.Minute

// TestSmoke checks a running environment end to end: echo answers through a
// port-forward to every server pod, Prometheus scrapes every server and
// client pod, every dashboard query and every rule returns data, and Grafana
// serves the datasources (Prometheus, Jaeger) and every dashboard.
func TestSmoke(t *testing.T) {
	ctx := t.Context()
	t.Run("echo", func(t *testing.T) {
		for _, p := range suite.Cluster.MustPods(t, namespace, "server", true, 0) {
			reply, err := echo.Echo(ctx, suite.Cluster.PortForward(t, namespace, p.Name, 20000), "smoke")
			if err != nil {
				t.Errorf("pod %s: echo: %v", p.Name, err)
				continue
			}
			if reply != "smoke" {
				t.Errorf("pod %s: echo replied %q, want %q", p.Name, reply, "smoke")
			}
		}
	})

	papi := prometheusAPI(t)
	t.Run("every pod scraped", func(t *testing.T) { waitScraped(t, papi, smokeTimeout) })

	t.Run("dashboard queries and rules return data", func(t *testing.T) {
		checks := dataChecks(t, papi)
		runCtx, cancel := context.WithTimeout(ctx, smokeTimeout)
		defer cancel()
		for _, err := range promcheck.RunUntil(runCtx, checks, 5*time.Second) {
			t.Error(err)
		}
		t.Logf("%d dashboard and rule checks", len(checks))
	})

	t.Run("grafana", func(t *testing.T) {
		if suite.SkipGrafana {
			t.Skip("Grafana checks skipped (SMOKE_SKIP_GRAFANA=1 or E2E_SKIP_GRAFANA=1): nothing about Grafana is proven")
		}
		base := "http://" + suite.Cluster.PortForward(t, namespace, suite.Cluster.MustPods(t, namespace, "grafana", true, 0)[0].Name, 3000)
		var health struct {
			Database string `json:"database"`
			Version  string `json:"version"`
		}
		if err := echo.GetJSON(ctx, base+"/api/health", &health); err != nil || health.Database != "ok" {
			t.Errorf("grafana /api/health: %+v %v", health, err)
		}
		// Anonymous viewers may query the datasource: it exists and reaches Prometheus.
		var q struct {
			Status string `json:"status"`
		}
		if err := echo.GetJSON(ctx, base+"/api/datasources/proxy/uid/prometheus/api/v1/query?query=up", &q); err != nil || q.Status != "success" {
			t.Errorf("grafana datasource uid prometheus: status %q, %v", q.Status, err)
		}
		// And the Jaeger datasource, which exemplars link to, holds both programs' traces.
		var services struct {
			Data []string `json:"data"`
		}
		if err := echo.GetJSON(ctx, base+"/api/datasources/proxy/uid/jaeger/api/services", &services); err != nil ||
			!slices.Contains(services.Data, "server") || !slices.Contains(services.Data, "client") {
			t.Errorf("grafana datasource uid jaeger: services %v, %v; want server and client", services.Data, err)
		}
		boards, err := dashboards.Load(filepath.Join(suite.Root, "dashboards"))
		if err != nil {
			t.Fatal(err)
		}
		for file, d := range boards {
			var got struct {
				Dashboard struct {
					UID string `json:"uid"`
				} `json:"dashboard"`
			}
			if err := echo.GetJSON(ctx, base+"/api/dashboards/uid/"+d.UID, &got); err != nil || got.Dashboard.UID != d.UID {
				t.Errorf("grafana does not serve %s (uid %s): %v", file, d.UID, err)
			}
		}
		version := health.Version
		if version == "" {
			version = "(its /api/health names no version)"
		}
		if t.Failed() {
			t.Errorf("could not check Grafana %s: it does not serve what infra/grafana provisions (the datasources, the dashboards); is it Grafana itself, with its provisioning mounted?", version)
			return
		}
		t.Logf("Grafana %s", version)
	})
}

// prometheusAPI returns a client of the Prometheus pod, through a port-forward.
func prometheusAPI(t *testing.T) promv1.API {
	t.Helper()
	return echo.PrometheusAt(t, suite.Cluster, namespace, suite.Cluster.MustPods(t, namespace, "prometheus", true, 0)[0].Name)
}

// waitScraped waits up to timeout until papi scrapes every running server
// and client pod (up == 1) under the job names the dashboards use.
func waitScraped(t *testing.T, papi promv1.API, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, job := range []string{"server", "client"} {
		var missing []string
		for {
			missing = missingTargets(t.Context(), t, papi, job)
			if len(missing) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if len(missing) > 0 {
			t.Errorf("job %s: running pods not scraped (up == 1): %v", job, missing)
		}
	}
}

// dataChecks are the checks that every dashboard query (variables resolved,
// $__rate_interval 1m) and every rule return data from papi.
func dataChecks(t *testing.T, papi promv1.API) []promcheck.Check {
	t.Helper()
	boards, err := dashboards.Load(filepath.Join(suite.Root, "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	checks, err := promcheck.Panels(t.Context(), papi, boards, map[string]string{"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}, "trace_id")
	if err != nil {
		t.Fatal(err)
	}
	rg, err := dashboards.LoadRules(filepath.Join(suite.Root, "infra", infra.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := promcheck.Rules(papi, rg)
	if err != nil {
		t.Fatal(err)
	}
	return append(checks, rules...)
}

// missingTargets returns the running pods of app that job does not scrape
// successfully.
func missingTargets(ctx context.Context, t *testing.T, papi promv1.API, job string) []string {
	t.Helper()
	pods, err := suite.Cluster.RunningPods(ctx, namespace, job)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) == 0 {
		return []string{"(no running " + job + " pod)"}
	}
	v, _, _, err := papi.Query(ctx, fmt.Sprintf(`up{job=%q} == 1`, job), time.Now())
	if err != nil {
		return []string{err.Error()}
	}
	var up []string
	if vec, ok := v.(model.Vector); ok {
		for _, s := range vec {
			up = append(up, string(s.Metric["pod"]))
		}
	}
	var missing []string
	for _, p := range pods {
		if !slices.Contains(up, p.Name) {
			missing = append(missing, p.Name)
		}
	}
	return missing
}
