package infra_test

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/promslog"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/dashboards"
)

// dashboardsDir holds the dashboards' JSON, their one source.
var dashboardsDir = filepath.Join("..", "dashboards")

// TestPrometheusScrapesTheMetricsServices: Prometheus reads the
// prometheus.yml of its ConfigMap, by Prometheus's own strict parser, and
// reloads it on change; the port named metrics of every Service is scraped,
// found by endpointslice discovery in Prometheus's own namespace and kept by
// Prometheus's own relabelling, by one job named after the Service's app,
// and no other port is; the TSDB's retention stays below the size of the
// volume that holds it.
func TestPrometheusScrapesTheMetricsServices(t *testing.T) {
	tr := mustBuild(t, ".")
	d, args := tr.Deployments["prometheus"], container(t, tr, "prometheus").Args
	file := flagValue(args, "--config.file")
	v := volumeAt(d, file)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("prometheus reads %q, which no ConfigMap holds", file)
	}
	if !slices.Contains(args, "--config.auto-reload") {
		t.Errorf("prometheus args %v: no --config.auto-reload, a config edit would need a restart", args)
	}
	cfg, err := promconfig.Load(configMapFile(t, tr, v.ConfigMap.Name, filepath.Base(file)), promslog.NewNopLogger())
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var discovering []*promconfig.ScrapeConfig // the jobs that find targets through Kubernetes
	for _, sc := range cfg.ScrapeConfigs {
		for _, sd := range sc.ServiceDiscoveryConfigs {
			if _, static := sd.(discovery.StaticConfig); static {
				continue
			}
			// Environments side by side in one cluster each scrape only their own pods.
			if k, ok := sd.(*kubernetes.SDConfig); !ok || k.Role != kubernetes.RoleEndpointSlice || !k.NamespaceDiscovery.IncludeOwnNamespace || len(k.NamespaceDiscovery.Names) > 0 {
				t.Errorf("job %s: discovery %s %+v, want endpointslices of Prometheus's own namespace only", sc.JobName, sd.Name(), sd)
				continue
			}
			discovering = append(discovering, sc)
		}
	}
	for _, svc := range tr.Services {
		for _, p := range svc.Spec.Ports {
			target := labels.FromStrings("__meta_kubernetes_service_name", svc.Name, "__meta_kubernetes_endpointslice_port_name", p.Name)
			var jobs, want []string
			for _, sc := range discovering {
				if relabel.ProcessBuilder(labels.NewBuilder(target), sc.RelabelConfigs...) {
					jobs = append(jobs, sc.JobName)
				}
			}
			if p.Name == "metrics" {
				want = []string{svc.Labels["app"]}
			}
			if !slices.Equal(jobs, want) {
				t.Errorf("service/%s port %s: scraped by the jobs %v, want %v", svc.Name, p.Name, jobs, want)
			}
		}
	}
	size := cfg.StorageConfig.TSDBConfig.Retention.Size
	if v := volumeAt(d, flagValue(args, "--storage.tsdb.path")); v == nil || v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || size <= 0 || v.EmptyDir.SizeLimit.Value() <= int64(size) {
		t.Errorf("prometheus data: retention size %v, want one below the sizeLimit of the emptyDir that holds --storage.tsdb.path, or the kubelet evicts the pod", size)
	}
}

// configMapFile returns the file key of tr's ConfigMap name.
func configMapFile(t *testing.T, tr *infra.Tree, name, key string) string {
	t.Helper()
	if cm := tr.ConfigMaps[name]; cm != nil && cm.Data[key] != "" {
		return cm.Data[key]
	}
	t.Fatalf("configmap/%s holds no %s", name, key)
	return ""
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// volumeAt returns the volume that holds path in d's container: the one
// mounted deepest at or above it.
func volumeAt(d *appsv1.Deployment, path string) *corev1.Volume {
	pod, mounted := &d.Spec.Template.Spec, ""
	var out *corev1.Volume
	for _, m := range pod.Containers[0].VolumeMounts {
		if path != m.MountPath && !strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") || len(m.MountPath) < len(mounted) {
			continue
		}
		for i := range pod.Volumes {
			if pod.Volumes[i].Name == m.Name {
				mounted, out = m.MountPath, &pod.Volumes[i]
			}
		}
	}
	return out
}

// TestGrafanaProvisioning: Grafana's datasources reach Services of the tree
// and include every datasource a dashboard names; exemplars lead on, to a
// trace or to a URL Grafana can fill in; the dashboards are provisioned
// from their files, read-only, every one of them.
// TestGrafanaProvisioning: Grafana's container commits no password; its
// datasources name Service ports of the manifests; every datasource a
// dashboard names is provisioned; exemplars lead to traces; the one
// dashboard provider reads the grafana-dashboards ConfigMap, which holds
// every dashboard, and allows no edit in the UI.
func TestGrafanaProvisioning(t *testing.T) {
	tr := mustBuild(t, ".")
	c := container(t, tr, "grafana")
	for _, e := range c.Env {
		if strings.Contains(e.Name, "PASSWORD") {
			t.Errorf("grafana env %s: no password is committed", e.Name)
		}
	}
	var ds grafanaDatasources
	if err := yaml.Unmarshal([]byte(configMapFile(t, tr, "grafana-datasources", "datasources.yaml")), &ds); err != nil {
		t.Fatalf("datasources.yaml: %v", err)
	}
	types := map[string]string{} // uid -> type
	for _, d := range ds.Datasources {
		types[d.UID] = d.Type
		host, port, _ := strings.Cut(strings.TrimPrefix(d.URL, "http://"), ":")
		if svc := tr.Services[host]; svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return fmt.Sprint(p.Port) == port }) {
			t.Errorf("datasource %s: URL %s names no Service port of the manifests", d.Name, d.URL)
		}
	}
	checkDashboardDatasources(t, types)
	checkExemplarDestinations(t, ds, types, c.Env)
	checkDashboardProvider(t, tr)
	checkDashboardsConfigMap(t, tr)
}

// grafanaDatasources is Grafana's datasources.yaml, the fields the checks
// read. Field names match the file's keys without regard to case.
type grafanaDatasources struct {
	Datasources []struct {
		Name, Type, UID, URL string
		JSONData             struct {
			ExemplarTraceIDDestinations []struct{ Name, DatasourceUID, URL string }
		}
	}
}

// checkDashboardDatasources checks that every datasource a dashboard, one
// of its panels, targets or variables names is provisioned with its type
// (types: uid -> type).
func checkDashboardDatasources(t *testing.T, types map[string]string) {
	t.Helper()
	boards, err := dashboards.Load(dashboardsDir)
	if err != nil {
		t.Fatal(err)
	}
	for file, b := range boards {
		refs := map[dashboards.Datasource]bool{}
		add := func(d *dashboards.Datasource) {
			if d != nil {
				refs[*d] = true
			}
		}
		for _, p := range b.AllPanels() {
			add(p.Datasource)
			for _, tg := range p.Targets {
				add(tg.Datasource)
			}
		}
		for _, v := range b.Templating.List {
			add(v.Datasource)
		}
		for r := range refs {
			if types[r.UID] != r.Type {
				t.Errorf("%s names datasource %+v, which is not provisioned (uid -> type: %v)", file, r, types)
			}
		}
	}
}

// checkExemplarDestinations checks that every exemplar of a latency panel
// leads on: to a trace in a provisioned tracing datasource, or to a URL
// whose variables Grafana's container defines in env ($$ is a literal $);
// and that one leads to a provisioned Jaeger datasource.
func checkExemplarDestinations(t *testing.T, ds grafanaDatasources, types map[string]string, env []corev1.EnvVar) {
	t.Helper()
	toTraces := false
	for _, d := range ds.Datasources {
		for _, dest := range d.JSONData.ExemplarTraceIDDestinations {
			if dest.Name != dashboards.TraceIDLabel {
				t.Errorf("exemplar destination %+v: label %q, want the programs' %q", dest, dest.Name, dashboards.TraceIDLabel)
			}
			if dest.DatasourceUID != "" {
				if types[dest.DatasourceUID] == "" {
					t.Errorf("exemplar destination %+v names no provisioned datasource", dest)
				}
				toTraces = toTraces || types[dest.DatasourceUID] == "jaeger"
				continue
			}
			for _, v := range regexp.MustCompile(`\$\$|\$\{?([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(dest.URL, -1) {
				if v[1] != "" && !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == v[1] }) {
					t.Errorf("exemplar destination URL %s: $%s is not set on Grafana's container", dest.URL, v[1])
				}
			}
		}
	}
	if !toTraces {
		t.Errorf("no exemplar destination leads to a provisioned Jaeger datasource")
	}
}

// checkDashboardProvider checks that Grafana has one dashboard provider,
// whose path is the grafana-dashboards ConfigMap's volume, and that it
// allows no edit in the UI.
func checkDashboardProvider(t *testing.T, tr *infra.Tree) {
	t.Helper()
	var providers struct {
		Providers []struct {
			AllowUIUpdates bool
			Options        struct{ Path string }
		}
	}
	if err := yaml.Unmarshal([]byte(configMapFile(t, tr, "grafana-dashboard-providers", "dashboards.yaml")), &providers); err != nil {
		t.Fatalf("dashboards.yaml: %v", err)
	}
	if len(providers.Providers) != 1 {
		t.Fatalf("dashboard providers = %d, want 1", len(providers.Providers))
	}
	p := providers.Providers[0]
	if v := volumeAt(tr.Deployments["grafana"], p.Options.Path); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != "grafana-dashboards" {
		t.Errorf("dashboard provider path %q is not the grafana-dashboards ConfigMap's volume (%+v)", p.Options.Path, v)
	}
	// The files are the single source: an edit in the UI would be lost.
	if p.AllowUIUpdates {
		t.Error("dashboard provider allows UI updates")
	}
}

// checkDashboardsConfigMap fails unless tr's ConfigMap grafana-dashboards
// holds every dashboard of dashboards/ and nothing else.
func checkDashboardsConfigMap(t *testing.T, tr *infra.Tree) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, f := range files {
		want = append(want, filepath.Base(f))
	}
	if cm := tr.ConfigMaps["grafana-dashboards"]; cm != nil {
		got = slices.Sorted(maps.Keys(cm.Data))
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("configmap/grafana-dashboards holds %v, want the dashboards/*.json files %v", got, want)
	}
}
