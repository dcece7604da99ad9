package dashboards_test

import (
	"debug/buildinfo"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra/proctest"
)

// prometheusListening finds the address in Prometheus's "Listening on" log line.
var prometheusListening = regexp.MustCompile(`msg="Listening on".* address=(\S+)`)

// writeLiveConfig writes the files of the cluster's Prometheus ConfigMap to
// dir, its prometheus.yml changed for the test: the same jobs, relabelling
// and rules, with Kubernetes discovery replaced by static targets that carry
// the discovery labels the relabelling reads, and shorter intervals.
func writeLiveConfig(t *testing.T, cm *corev1.ConfigMap, dir, namespace, promAddr string, endpoints []endpoint) {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["prometheus.yml"]), &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
	}
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = liveInterval, liveInterval, liveInterval
	cfg["global"] = global

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
			own, _ := sd["namespaces"].(map[string]any)["own_namespace"].(bool)
			if sd["role"] != "endpointslice" || !own {
				t.Fatalf("job %s: discovery %v: the test stands in for role endpointslice in Prometheus's own namespace (%s) only", name, sd, namespace)
			}
			var groups []any
			for _, ep := range endpoints {
				groups = append(groups, map[string]any{
					"targets": []any{ep.addr},
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The rule files sit beside prometheus.yml, as in the ConfigMap's mount.
	for file, data := range cm.Data {
		if file == "prometheus.yml" {
			data = string(out)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// prometheusArgs is the cluster's command line with the file paths and the
// listen address of the test.
func prometheusArgs(t *testing.T, cluster corev1.Container, cfgFile, dataDir, addr string) []string {
	t.Helper()
	local := map[string]string{
		"--config.file":        cfgFile,
		"--storage.tsdb.path":  dataDir,
		"--web.listen-address": addr,
	}
	var args []string
	for _, a := range cluster.Args {
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
		t.Fatalf("the cluster's prometheus args lack %v", slices.Sorted(maps.Keys(local)))
	}
	return args
}

// prometheusBinary returns the Prometheus server built from the module go.mod
// pins (a go tool, cached by the go command), after checking that its version
// matches the cluster's image in major and minor: image v3.16.x is module
// v0.316.x.
func prometheusBinary(t *testing.T, image string) string {
	t.Helper()
	m := regexp.MustCompile(`^prom/prometheus:v(\d+)\.(\d+)\.\d+$`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("the cluster's Prometheus image %q is not prom/prometheus:vX.Y.Z", image)
	}
	minor, _ := strconv.Atoi(m[2])
	wantModule := fmt.Sprintf("v0.%s%02d.", m[1], minor)

	start := time.Now()
	bin, err := proctest.Tool(".", "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Logf("built Prometheus in %v (cached from now on)", took.Round(time.Second))
	}
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
