//go:build e2e

package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/promcheck"
)

// The Prometheus the operator runs, as kube-prometheus-stack would: in its
// own namespace, picking monitors and rules by the release label.
const (
	monitoringNamespace = "monitoring"
	prometheusName      = "kube-prometheus-stack-prometheus"
	operatorModule      = "github.com/prometheus-operator/prometheus-operator"
	operatorTimeout     = 5 * time.Minute
)

// TestOperator (opt-in: E2E_OPERATOR=1) proves infra/operator against a real
// Prometheus Operator: it builds the operator and its config reloader from
// the Go module proxy (infra/e2e/promoperator), runs them from images built
// FROM scratch and pushed to the cluster's registry, installs the CRDs and
// the operator from that module version's bundle.yaml, and runs a Prometheus
// (the cluster's prom/prometheus image) that selects what the overlay
// labels. The overlay's monitors, rule and dashboards ConfigMap are validated
// by a server-side dry run against the installed CRDs, then applied; the app
// they watch is infra/app, running already. The operator's Prometheus must
// scrape every server and client pod, load every rule group, and answer
// every dashboard query and rule with data.
func TestOperator(t *testing.T) {
	if os.Getenv("E2E_OPERATOR") != "1" {
		t.Skip("opt-in: E2E_OPERATOR=1 (builds and runs the Prometheus Operator)")
	}
	ctx := t.Context()
	began := time.Now()
	modDir, version := operatorSource(t)
	registry, err := suite.Cluster.LocalRegistry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	images := buildOperatorImages(t, registry, version)
	t.Logf("operator %s and config reloader built and pushed in %v", version, time.Since(began).Round(time.Second))

	installOperator(t, modDir, images)
	t.Logf("CRDs and operator running %v after the start", time.Since(began).Round(time.Second))

	prom := mustDecode(t, prometheusObjects())
	t.Cleanup(func() { suite.Cluster.DeleteAll(t, prom) })
	for _, obj := range prom {
		if err := suite.Cluster.Apply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
	}

	applyMonitoring(t)

	pod := "prometheus-" + prometheusName + "-0"
	if err := suite.Cluster.WaitPodReady(ctx, monitoringNamespace, pod, operatorTimeout); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	papi := echo.PrometheusAt(t, suite.Cluster, monitoringNamespace, pod)

	waitScraped(t, papi, 2*time.Minute)
	t.Logf("every server and client pod scraped %v after Prometheus was ready", time.Since(ready).Round(time.Second))
	// $__rate_interval 1m: four of the monitors' 15s scrape intervals.
	checks := dataChecks(t, papi)
	runCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	failed := promcheck.RunUntil(runCtx, checks, 5*time.Second)
	for _, err := range failed {
		t.Error(err)
	}
	t.Logf("%d dashboard and rule checks, %d failed, %v after Prometheus was ready; whole check %v",
		len(checks), len(failed), time.Since(ready).Round(time.Second), time.Since(began).Round(time.Second))
}

// installOperator installs the CRDs and the operator from the bundle of the
// operator module in modDir, on images, and waits until the operator runs.
func installOperator(t *testing.T, modDir string, images map[string]string) {
	t.Helper()
	ctx := t.Context()
	bundle, err := os.ReadFile(filepath.Join(modDir, "bundle.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// What the check installs it removes at the end: the CRDs (and with
	// them every monitor, rule and Prometheus), the operator, its namespace.
	t.Cleanup(func() { suite.Cluster.DeleteAll(t, objs) })
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			useOurImages(t, o, images)
		}
		if err := suite.Cluster.Apply(ctx, o, false); err != nil {
			t.Fatal(err)
		}
	}
	waitCRDs(t, objs)
	if err := suite.Cluster.WaitRollout(ctx, first(objs, "Deployment").GetNamespace(), first(objs, "Deployment").GetName(), operatorTimeout); err != nil {
		t.Fatal(err)
	}
}

// applyMonitoring applies the overlay's monitoring objects, each validated
// by the CRDs first in a server-side dry run; they are removed when the test
// ends.
func applyMonitoring(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	monitoring := operatorMonitoring(t)
	for _, obj := range monitoring {
		if err := suite.Cluster.Apply(ctx, obj, true); err != nil {
			t.Fatalf("server-side dry run: %v", err)
		}
	}
	t.Cleanup(func() { suite.Cluster.DeleteAll(t, monitoring) })
	for _, obj := range monitoring {
		if err := suite.Cluster.Apply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d objects of infra/operator passed a server-side dry run against the installed CRDs and were applied", len(monitoring))
}

// operatorSource returns the module directory and version of the operator
// that infra/e2e/promoperator pins.
func operatorSource(t *testing.T) (dir, version string) {
	t.Helper()
	cmd := exec.Command("go", "-C", filepath.Join(suite.Root, "infra", "e2e", "promoperator"), "mod", "download", "-json", operatorModule)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", operatorModule, err)
	}
	for line := range strings.Lines(string(out)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `",`)
		switch strings.Trim(k, `"`) {
		case "Dir":
			dir = v
		case "Version":
			version = v
		}
	}
	if dir == "" || version == "" {
		t.Fatalf("go mod download %s: no Dir or Version in %s", operatorModule, out)
	}
	return dir, version
}

// buildOperatorImages builds the operator and the config reloader for the
// nodes' architecture, each into an image FROM scratch laid out like the
// upstream one (/bin/NAME), and pushes them to the registry.
func buildOperatorImages(t *testing.T, registry, version string) map[string]string {
	t.Helper()
	ctx := t.Context()
	arch, err := suite.Cluster.NodeArch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "-C", filepath.Join(suite.Root, "infra", "e2e", "promoperator"), "build", "-trimpath", "-ldflags=-s -w",
		"-o", dir+string(filepath.Separator), operatorModule+"/cmd/operator", operatorModule+"/cmd/prometheus-config-reloader")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the operator: %v\n%s", err, out)
	}
	images := map[string]string{}
	for name, bin := range map[string]string{"prometheus-operator": "operator", "prometheus-config-reloader": "prometheus-config-reloader"} {
		ctxDir := filepath.Join(dir, name+"-image")
		if err := os.MkdirAll(ctxDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, bin), filepath.Join(ctxDir, bin)); err != nil {
			t.Fatal(err)
		}
		dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /bin/%s\nUSER 65534:65534\nENTRYPOINT [\"/bin/%s\"]\n", bin, bin, bin)
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprintf("%s/%s:%s-e2e", registry, name, version)
		for _, argv := range [][]string{{"docker", "build", "-q", "-t", ref, ctxDir}, {"docker", "push", "-q", ref}} {
			if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
			}
		}
		images[name] = ref
	}
	return images
}

// useOurImages points the bundle's operator Deployment at the images built
// here, for the operator and for the reloader it adds to Prometheus pods.
func useOurImages(t *testing.T, d *unstructured.Unstructured, images map[string]string) {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) != 1 {
		t.Fatalf("bundle Deployment: %d containers (%v), want 1", len(containers), err)
	}
	c := containers[0].(map[string]any)
	c["image"] = images["prometheus-operator"]
	args, _ := c["args"].([]any)
	found := false
	for i, a := range args {
		if s, _ := a.(string); strings.HasPrefix(s, "--prometheus-config-reloader=") {
			args[i] = "--prometheus-config-reloader=" + images["prometheus-config-reloader"]
			found = true
		}
	}
	if !found {
		t.Fatal("bundle Deployment: no --prometheus-config-reloader argument")
	}
	if err := unstructured.SetNestedSlice(d.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
}

// prometheusObjects is a Prometheus as kube-prometheus-stack runs it, with
// its defaults where they matter here: monitors and rules selected by the
// release label from every namespace, native histograms and exemplars kept.
func prometheusObjects() string {
	return `apiVersion: v1
kind: Namespace
metadata:
  name: monitoring
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus
  namespace: monitoring
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: e2e-prometheus
rules:
  - apiGroups: [""]
    resources: [services, endpoints, pods]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: e2e-prometheus
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: e2e-prometheus
subjects:
  - kind: ServiceAccount
    name: prometheus
    namespace: monitoring
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: ` + prometheusName + `
  namespace: monitoring
spec:
  image: prom/prometheus:v3.16.0
  version: v3.16.0
  replicas: 1
  serviceAccountName: prometheus
  serviceMonitorSelector:
    matchLabels:
      release: kube-prometheus-stack
  serviceMonitorNamespaceSelector: {}
  ruleSelector:
    matchLabels:
      release: kube-prometheus-stack
  ruleNamespaceSelector: {}
  scrapeInterval: 15s
  evaluationInterval: 15s
  enableFeatures: [exemplar-storage]
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    fsGroup: 65534
`
}

// operatorMonitoring builds infra/operator and returns what it adds to
// infra/app: its ServiceMonitors, PrometheusRule and dashboards ConfigMap.
func operatorMonitoring(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := kustomizeBuild(filepath.Join(suite.Root, "infra", "operator"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == "ServiceMonitor" || u.GetKind() == "PrometheusRule" || (u.GetKind() == "ConfigMap" && u.GetName() == "grafana-dashboards") {
			out = append(out, u)
		}
	}
	if len(out) != 4 {
		t.Fatalf("infra/operator: %d monitoring objects, want 2 ServiceMonitors, a PrometheusRule and the dashboards", len(out))
	}
	return out
}

// waitCRDs waits until every CustomResourceDefinition among objs is
// established.
func waitCRDs(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := kube.Poll(t.Context(), operatorTimeout, "CRD "+o.GetName()+" established", func(ctx context.Context) (bool, string) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := suite.Cluster.Client.Discovery().RESTClient().Get().AbsPath("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", o.GetName()).Do(ctx).Into(crd); err != nil {
				return false, err.Error()
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, ""
				}
			}
			return false, "not established"
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// decodeObjects decodes a multi-document YAML stream.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

func mustDecode(t *testing.T, s string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := decodeObjects([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// first returns the first object of kind.
func first(objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	for _, x := range objs {
		if x.GetKind() == kind {
			return x
		}
	}
	return &unstructured.Unstructured{Object: map[string]any{}}
}
