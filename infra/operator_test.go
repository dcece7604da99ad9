package infra_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"example.com/grpc-metrics/infra"
)

// releaseLabel is what kube-prometheus-stack's default selectors match: the
// label release with its Helm release name.
const releaseLabel = "release"

// TestPrometheusRuleIsTheRulesFile: the PrometheusRule holds exactly the
// rules of infra/prometheus/rules.yml, their one source.
func TestPrometheusRuleIsTheRulesFile(t *testing.T) {
	rules, err := os.ReadFile(infra.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	want, err := infra.PrometheusRuleYAML(rules)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(infra.PrometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from what %s gives: run scripts/generate (-want +got):\n%s", infra.PrometheusRuleFile, infra.RulesFile, diff)
	}
	if _, err := infra.PrometheusRuleYAML([]byte("groups:\n  - name: g\n    rules:\n      - record: r\n        expression: up\n")); err == nil {
		t.Error("a rules file with an unknown field converted without error")
	}
}

// TestOperatorOverlay: infra/operator deploys infra/base's app, with its own
// tracing settings and no Prometheus or Grafana of its own; the operator's
// Prometheus scrapes what infra/base's does, with the same labels, and picks
// up the rules; Grafana's sidecar the dashboards.
func TestOperatorOverlay(t *testing.T) {
	base, op := mustBuild(t, "base"), mustBuild(t, "operator")
	for _, name := range programs {
		if diff := cmp.Diff(tracingSettings(t, base, name), tracingSettings(t, op, name)); diff != "" {
			t.Errorf("deployment/%s differs from infra/base (-base +operator):\n%s", name, diff)
		}
	}
	for _, tr := range []*infra.Tree{base, op} {
		if settings := tr.ConfigMaps[envFromName(tr.Deployments["server"])]; settings == nil || settings.Data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
			t.Errorf("the server's tracing settings %v name no OTLP endpoint", settings)
		}
	}
	for id := range op.Raw {
		if strings.HasPrefix(id, "deployment/prometheus") || strings.Contains(id, "prometheus-config") || id == "role/prometheus" || strings.Contains(id, "grafana-data") {
			t.Errorf("%s: the operator overlay carries no Prometheus or Grafana of its own", id)
		}
	}

	// The port named metrics of every Service is scraped by one monitor, its
	// job the Service's app label as in prometheus.yml; no other port is.
	for _, svc := range op.Services {
		for _, p := range svc.Spec.Ports {
			var jobs, want []string
			for _, sm := range op.ServiceMonitors {
				sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
				if err == nil && sel.Matches(labels.Set(svc.Labels)) && slices.ContainsFunc(sm.Spec.Endpoints, func(e monitoringv1.Endpoint) bool { return e.Port == p.Name }) {
					jobs = append(jobs, svc.Labels[sm.Spec.JobLabel])
				}
			}
			if p.Name == "metrics" {
				want = []string{svc.Labels["app"]}
			}
			if !slices.Equal(jobs, want) {
				t.Errorf("service/%s port %s: scraped as the jobs %v, want %v", svc.Name, p.Name, jobs, want)
			}
		}
	}
	// The dashboards read namespace, pod and service, and the native and
	// classic histograms; the operator's container and endpoint labels go.
	for name, sm := range op.ServiceMonitors {
		if sm.Labels[releaseLabel] == "" {
			t.Errorf("servicemonitor/%s: no %s label, which kube-prometheus-stack's default selector needs", name, releaseLabel)
		}
		if sm.Spec.ScrapeNativeHistograms == nil || !*sm.Spec.ScrapeNativeHistograms || sm.Spec.ScrapeClassicHistograms == nil || !*sm.Spec.ScrapeClassicHistograms {
			t.Errorf("servicemonitor/%s: want native and classic histograms scraped", name)
		}
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(e.RelabelConfigs, func(r monitoringv1.RelabelConfig) bool {
				return r.Action == "labeldrop" && r.Regex == "container|endpoint"
			}) {
				t.Errorf("servicemonitor/%s port %s: does not drop the container and endpoint labels", name, e.Port)
			}
		}
	}
	if rule := op.PrometheusRules["echo"]; rule == nil || rule.Labels[releaseLabel] == "" {
		t.Errorf("prometheusrule/echo missing or without the %s label", releaseLabel)
	}
	if cm := op.ConfigMaps["grafana-dashboards"]; cm == nil || cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("configmap/grafana-dashboards missing or without the sidecar label grafana_dashboard=1")
	}
	checkDashboardsConfigMap(t, op)
}

// envFromName is the ConfigMap whose keys are d's environment.
func envFromName(d *appsv1.Deployment) string {
	for _, e := range d.Spec.Template.Spec.Containers[0].EnvFrom {
		if e.ConfigMapRef != nil {
			return e.ConfigMapRef.Name
		}
	}
	return ""
}

// tracingSettings returns a copy of deployment name of tr in which the
// ConfigMap of its environment is named "tracing settings": two trees'
// Deployments compare equal when only those differ.
func tracingSettings(t *testing.T, tr *infra.Tree, name string) *appsv1.Deployment {
	t.Helper()
	d := tr.Deployments[name].DeepCopy()
	for i, e := range d.Spec.Template.Spec.Containers[0].EnvFrom {
		if e.ConfigMapRef == nil || tr.ConfigMaps[e.ConfigMapRef.Name] == nil {
			t.Fatalf("deployment/%s: environment from %+v, not a ConfigMap of the tree", name, e)
		}
		d.Spec.Template.Spec.Containers[0].EnvFrom[i].ConfigMapRef.Name = "tracing settings"
	}
	return d
}
