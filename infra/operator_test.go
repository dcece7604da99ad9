package infra_test

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"

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

func TestOperatorOverlay(t *testing.T) {
	base, op := mustBuild(t, "base"), mustBuild(t, "operator")

	// The app is the same as infra/base's but for where its spans go: each
	// tree's own tracing settings.
	for _, name := range []string{"server", "client"} {
		b, o := tracingSettings(t, base, name), tracingSettings(t, op, name)
		if diff := cmp.Diff(b, o); diff != "" {
			t.Errorf("deployment/%s differs from infra/base (-base +operator):\n%s", name, diff)
		}
	}
	for _, tr := range []*tree{base, op} {
		if settings := tr.configMaps[envFromName(tr.deployments["server"])]; settings == nil || settings.Data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
			t.Errorf("the server's tracing settings %v name no OTLP endpoint", settings)
		}
	}
	for id := range op.raw {
		if strings.HasPrefix(id, "deployment/prometheus") || strings.Contains(id, "prometheus-config") || id == "role/prometheus" || strings.Contains(id, "grafana-data") {
			t.Errorf("%s: the operator overlay carries no Prometheus or Grafana of its own", id)
		}
	}

	// One monitor per program's metrics Service, with the labels the
	// dashboards read: job from the Service's app label, namespace, pod,
	// service; no container or endpoint label.
	if got := slices.Sorted(maps.Keys(op.serviceMonitors)); !slices.Equal(got, []string{"client", "server"}) {
		t.Fatalf("service monitors %v, want client and server", got)
	}
	for name, sm := range op.serviceMonitors {
		if sm.Labels[releaseLabel] == "" {
			t.Errorf("servicemonitor/%s: no %s label, which kube-prometheus-stack's default selector needs", name, releaseLabel)
		}
		if sm.Spec.JobLabel != "app" || sm.Spec.Selector.MatchLabels["app"] != name {
			t.Errorf("servicemonitor/%s: jobLabel %q, selector %v; want jobLabel app and app=%s", name, sm.Spec.JobLabel, sm.Spec.Selector.MatchLabels, name)
		}
		if sm.Spec.ScrapeNativeHistograms == nil || !*sm.Spec.ScrapeNativeHistograms || sm.Spec.ScrapeClassicHistograms == nil || !*sm.Spec.ScrapeClassicHistograms {
			t.Errorf("servicemonitor/%s: want native and classic histograms scraped", name)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
			t.Fatalf("servicemonitor/%s: endpoints %+v, want the port named metrics", name, sm.Spec.Endpoints)
		}
		drops := false
		for _, r := range sm.Spec.Endpoints[0].RelabelConfigs {
			drops = drops || (r.Action == "labeldrop" && r.Regex == "container|endpoint")
		}
		if !drops {
			t.Errorf("servicemonitor/%s: does not drop the container and endpoint labels", name)
		}
		// The selected Service with a port named metrics: the seed's contract.
		svc := op.services[name+"-metrics-service"]
		if svc == nil || svc.Labels["app"] != name || svc.Spec.Ports[0].Name != "metrics" {
			t.Errorf("servicemonitor/%s selects no %s-metrics-service with a port named metrics", name, name)
		}
	}

	rule := op.prometheusRules["echo"]
	if rule == nil || rule.Labels[releaseLabel] == "" {
		t.Fatalf("prometheusrule/echo missing or without the %s label", releaseLabel)
	}

	// The dashboards, as a ConfigMap for Grafana's sidecar, are the files of
	// dashboards/ byte for byte.
	cm := op.configMaps["grafana-dashboards"]
	if cm == nil || cm.Labels["grafana_dashboard"] != "1" {
		t.Fatalf("configmap/grafana-dashboards missing or without the sidecar label grafana_dashboard=1")
	}
	files, err := filepath.Glob(filepath.Join("..", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[filepath.Base(f)] != string(data) {
			t.Errorf("configmap/grafana-dashboards: %s is not dashboards/%s", filepath.Base(f), filepath.Base(f))
		}
	}
	if len(cm.Data) != len(files) {
		t.Errorf("configmap/grafana-dashboards holds %d files, dashboards/ %d", len(cm.Data), len(files))
	}
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
func tracingSettings(t *testing.T, tr *tree, name string) *appsv1.Deployment {
	t.Helper()
	d := tr.deployments[name].DeepCopy()
	for i, e := range d.Spec.Template.Spec.Containers[0].EnvFrom {
		if e.ConfigMapRef == nil || tr.configMaps[e.ConfigMapRef.Name] == nil {
			t.Fatalf("deployment/%s: environment from %+v, not a ConfigMap of the tree", name, e)
		}
		d.Spec.Template.Spec.Containers[0].EnvFrom[i].ConfigMapRef.Name = "tracing settings"
	}
	return d
}
