package infra_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/hasher"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra"
)

const namespace = "echo"

// tree is one built kustomize tree, every object decoded into its API type.
type tree struct {
	namespaces      []*corev1.Namespace
	serviceAccounts map[string]*corev1.ServiceAccount
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	deployments     map[string]*appsv1.Deployment
	roles           map[string]*rbacv1.Role
	roleBindings    map[string]*rbacv1.RoleBinding
	serviceMonitors map[string]*monitoringv1.ServiceMonitor
	prometheusRules map[string]*monitoringv1.PrometheusRule
	// raw is each object's YAML by "kind/name".
	raw map[string][]byte
}

// build runs kustomize on dir (relative to this package) in process and
// decodes every object strictly: an unknown field or kind is an error.
func build(dir string) (*tree, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	t := &tree{
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		deployments:     map[string]*appsv1.Deployment{},
		roles:           map[string]*rbacv1.Role{},
		roleBindings:    map[string]*rbacv1.RoleBinding{},
		serviceMonitors: map[string]*monitoringv1.ServiceMonitor{},
		prometheusRules: map[string]*monitoringv1.PrometheusRule{},
		raw:             map[string][]byte{},
	}
	for _, r := range resMap.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		id := strings.ToLower(r.GetKind()) + "/" + r.GetName()
		if _, dup := t.raw[id]; dup {
			return nil, fmt.Errorf("%s: defined twice", id)
		}
		t.raw[id] = data
		if err := t.add(r.GetKind(), data); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
	}
	return t, nil
}

func (t *tree) add(kind string, data []byte) error {
	switch kind {
	case "Namespace":
		return decode(data, func(o *corev1.Namespace) { t.namespaces = append(t.namespaces, o) })
	case "ServiceAccount":
		return decode(data, func(o *corev1.ServiceAccount) { t.serviceAccounts[o.Name] = o })
	case "Service":
		return decode(data, func(o *corev1.Service) { t.services[o.Name] = o })
	case "ConfigMap":
		return decode(data, func(o *corev1.ConfigMap) { t.configMaps[o.Name] = o })
	case "Deployment":
		return decode(data, func(o *appsv1.Deployment) { t.deployments[o.Name] = o })
	case "Role":
		return decode(data, func(o *rbacv1.Role) { t.roles[o.Name] = o })
	case "RoleBinding":
		return decode(data, func(o *rbacv1.RoleBinding) { t.roleBindings[o.Name] = o })
	// The Prometheus Operator's kinds, into its own published types.
	case "ServiceMonitor":
		return decode(data, func(o *monitoringv1.ServiceMonitor) { t.serviceMonitors[o.Name] = o })
	case "PrometheusRule":
		return decode(data, func(o *monitoringv1.PrometheusRule) { t.prometheusRules[o.Name] = o })
	}
	return fmt.Errorf("kind %q is not expected in this tree", kind)
}

func decode[T any](data []byte, keep func(*T)) error {
	o := new(T)
	if err := yaml.UnmarshalStrict(data, o); err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	keep(o)
	return nil
}

// built holds each tree built so far: every tree is rendered once per run.
// Tests read the trees; one that changes an object changes a copy.
var built = map[string]*tree{}

func mustBuild(t *testing.T, dir string) *tree {
	t.Helper()
	if tr, ok := built[dir]; ok {
		return tr
	}
	tr, err := build(dir)
	if err != nil {
		t.Fatal(err)
	}
	built[dir] = tr
	return tr
}

func TestTreesBuildAndDecodeStrictly(t *testing.T) {
	for _, dir := range []string{".", "base", "dev", "app", "operator"} {
		t.Run(dir, func(t *testing.T) {
			tr := mustBuild(t, dir)
			if len(tr.namespaces) != 1 || tr.namespaces[0].Name != namespace {
				t.Fatalf("want exactly the namespace %q, got %d namespaces", namespace, len(tr.namespaces))
			}
			want := []string{"server", "client", "prometheus", "jaeger", "grafana"}
			if dir == "app" || dir == "operator" {
				want = []string{"server", "client"}
			}
			if got := slices.Sorted(maps.Keys(tr.deployments)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Errorf("deployments %v, want %v", got, want)
			}
			for id, data := range tr.raw {
				if id == "namespace/"+namespace {
					continue
				}
				var meta struct {
					Metadata struct {
						Namespace string            `json:"namespace"`
						Labels    map[string]string `json:"labels"`
					} `json:"metadata"`
				}
				if err := yaml.Unmarshal(data, &meta); err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				if meta.Metadata.Namespace != namespace {
					t.Errorf("%s: namespace %q, want %q", id, meta.Metadata.Namespace, namespace)
				}
				// The Tiltfile selects the observability objects by this label.
				if meta.Metadata.Labels["app"] == "" {
					t.Errorf("%s: no app label", id)
				}
			}
		})
	}
}

func TestNamespaceEnforcesRestrictedPodSecurity(t *testing.T) {
	ns := mustBuild(t, ".").namespaces[0]
	for _, mode := range []string{"enforce", "audit", "warn"} {
		key := "pod-security.kubernetes.io/" + mode
		if got := ns.Labels[key]; got != "restricted" {
			t.Errorf("namespace label %s = %q, want restricted", key, got)
		}
	}
}

// rule is one of the project's rules for a container of a pod template,
// beyond the restricted Pod Security Standard (checked by its own evaluator)
// and the read-only root filesystem (infra.ReadOnlyRootViolations).
type rule struct {
	name  string
	check func(c *corev1.Container) error
}

var projectRules = []rule{
	{"requests and limits", func(c *corev1.Container) error {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[name], c.Resources.Limits[name]
			if req.IsZero() || lim.IsZero() {
				return fmt.Errorf("%s request or limit is missing", name)
			}
			if req.Cmp(lim) > 0 {
				return fmt.Errorf("%s request %s exceeds limit %s", name, req.String(), lim.String())
			}
		}
		return nil
	}},
	{"pinned image", func(c *corev1.Container) error {
		_, tag, ok := strings.Cut(c.Image, ":")
		if !ok || tag == "" || tag == "latest" {
			return fmt.Errorf("image %q has no pinned tag", c.Image)
		}
		return nil
	}},
	{"probes", func(c *corev1.Container) error {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			return errors.New("readiness or liveness probe is missing")
		}
		return nil
	}},
}

// violations lists why a pod template breaks the restricted Pod Security
// Standard or the project's rules.
func violations(t *testing.T, meta *metav1.ObjectMeta, pod *corev1.PodSpec) []string {
	t.Helper()
	out, err := infra.RestrictedViolations(meta, pod)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, infra.ReadOnlyRootViolations(pod)...)
	for i := range pod.Containers {
		c := &pod.Containers[i]
		for _, r := range projectRules {
			if err := r.check(c); err != nil {
				out = append(out, fmt.Sprintf("container %s: %s: %v", c.Name, r.name, err))
			}
		}
	}
	return out
}

func TestPodTemplatesAreHardened(t *testing.T) {
	tr := mustBuild(t, ".")
	for name, d := range tr.deployments {
		for _, v := range violations(t, &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec) {
			t.Errorf("deployment/%s: %s", name, v)
		}
		if len(d.Spec.Template.Spec.InitContainers) > 0 {
			t.Errorf("deployment/%s: init containers are not checked by the project's rules", name)
		}
	}
}

// TestDevBuildPassesRestricted: the Tilt dev build relaxes only the read-only
// root filesystem, which the restricted standard does not ask for.
func TestDevBuildPassesRestricted(t *testing.T) {
	for name, d := range mustBuild(t, "dev").deployments {
		v, err := infra.RestrictedViolations(&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, reason := range v {
			t.Errorf("dev deployment/%s: %s", name, reason)
		}
		writable := infra.ReadOnlyRootViolations(&d.Spec.Template.Spec, "server", "client")
		for _, reason := range writable {
			t.Errorf("dev deployment/%s: %s", name, reason)
		}
	}
}

func container(t *testing.T, tr *tree, deployment string) *corev1.Container {
	t.Helper()
	d := tr.deployments[deployment]
	if d == nil {
		t.Fatalf("deployment %q is missing", deployment)
	}
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("deployment %q has %d containers, want 1", deployment, n)
	}
	return &d.Spec.Template.Spec.Containers[0]
}

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestProgramsListenWhereTheyAreReached: the port each program is told to
// listen on (its *_PORT variables) is the container port of that name, and
// every probe reaches a port the container declares. The three places a
// port is written cannot drift apart.
func TestProgramsListenWhereTheyAreReached(t *testing.T) {
	tr := mustBuild(t, ".")
	for _, name := range []string{"server", "client"} {
		c := container(t, tr, name)
		declared := map[string]int32{}
		for _, p := range c.Ports {
			declared[p.Name] = p.ContainerPort
		}
		for _, e := range c.Env {
			kind, ok := strings.CutSuffix(strings.TrimPrefix(e.Name, strings.ToUpper(name)+"_"), "_PORT")
			if !ok || e.Name == strings.ToUpper(name)+"_DEBUG_PORT" {
				continue
			}
			port, found := declared[strings.ToLower(kind)]
			if !found || fmt.Sprint(port) != e.Value {
				t.Errorf("deployment/%s: %s=%s, but its container port %q is %d (declared: %v)", name, e.Name, e.Value, strings.ToLower(kind), port, found)
			}
		}
		for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if probe == nil {
				t.Errorf("deployment/%s has no %s probe", name, what)
				continue
			}
			var port intstr.IntOrString
			switch h := probe.ProbeHandler; {
			case h.GRPC != nil:
				port = intstr.FromInt32(h.GRPC.Port)
			case h.HTTPGet != nil:
				port = h.HTTPGet.Port
			default:
				t.Errorf("deployment/%s: the %s probe is neither gRPC nor HTTP", name, what)
				continue
			}
			if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
				return (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal)
			}) {
				t.Errorf("deployment/%s: the %s probe reaches port %s, which the container does not declare", name, what, port.String())
			}
		}
	}
}

// TestClientWatchesTheServerService: the client resolves the server's
// Service by its EndpointSlices, in its own namespace whichever it is, on a
// port the Service has; the Service stays headless for dns:/// callers.
func TestClientWatchesTheServerService(t *testing.T) {
	tr := mustBuild(t, ".")
	s := tr.services["server-service"]
	if s == nil {
		t.Fatal("service server-service is missing")
	}
	if s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("server-service clusterIP = %q, want None (a DNS name answers every pod address)", s.Spec.ClusterIP)
	}
	if len(s.Spec.Ports) != 1 {
		t.Fatalf("server-service ports = %+v, want one", s.Spec.Ports)
	}
	c := container(t, tr, "client")
	want := fmt.Sprintf("kubernetes:///%s.$(POD_NAMESPACE):%s", s.Name, s.Spec.Ports[0].Name)
	if got := env(c, "CLIENT_SERVER_ADDR"); got != want {
		t.Errorf("client CLIENT_SERVER_ADDR = %q, want %q", got, want)
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" })
	j := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "CLIENT_SERVER_ADDR" })
	if i < 0 || i > j || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("client: POD_NAMESPACE is not the pod's namespace (downward API), defined before CLIENT_SERVER_ADDR uses it")
	}
}

func TestServicesSelectPodsAndPorts(t *testing.T) {
	tr := mustBuild(t, ".")
	for name, s := range tr.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("service/%s has no selector", name)
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var matched []*appsv1.Deployment
		for _, d := range tr.deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = append(matched, d)
			}
		}
		if len(matched) != 1 {
			t.Errorf("service/%s selects the pods of %d deployments, want 1", name, len(matched))
			continue
		}
		ports := matched[0].Spec.Template.Spec.Containers[0].Ports
		for _, p := range s.Spec.Ports {
			if !slices.ContainsFunc(ports, func(cp corev1.ContainerPort) bool {
				return (p.TargetPort.Type == intstr.String && cp.Name == p.TargetPort.StrVal) ||
					(p.TargetPort.Type == intstr.Int && cp.ContainerPort == p.TargetPort.IntVal)
			}) {
				t.Errorf("service/%s port %s: target port %s is not a port of deployment/%s", name, p.Name, p.TargetPort.String(), matched[0].Name)
			}
		}
	}
}

func TestServerShutdownFitsTheGracePeriod(t *testing.T) {
	tr := mustBuild(t, ".")
	c := container(t, tr, "server")
	// The wait for clients to move away belongs to pod termination only: an
	// in-process delay would also hold up every restart of the process in
	// place (Tilt's live update), and a restart needs none.
	if v := env(c, "SERVER_SHUTDOWN_DELAY"); v != "" && v != "0s" && v != "0" {
		t.Errorf("SERVER_SHUTDOWN_DELAY = %s, want unset: the preStop hook waits instead", v)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatalf("server container: no preStop sleep hook (lifecycle %+v)", c.Lifecycle)
	}
	delay := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	timeout, err := time.ParseDuration(env(c, "SERVER_SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Fatalf("SERVER_SHUTDOWN_TIMEOUT: %v", err)
	}
	// The client, which watches the EndpointSlices, has moved away before
	// the pod stops answering (docs/RESILIENCE.md).
	if delay <= 0 {
		t.Errorf("preStop sleep = %v, want some: a client's watch may lag the pod's removal", delay)
	}
	ru := tr.deployments["server"].Spec.Strategy.RollingUpdate
	if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge == nil || ru.MaxSurge.String() != "100%" {
		t.Errorf("server rolling update = %+v, want maxSurge 100%% and maxUnavailable 0: every new pod ready before an old one stops", ru)
	}
	grace := tr.deployments["server"].Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatal("terminationGracePeriodSeconds is unset")
	}
	// The grace period counts from the start of the preStop hook.
	if time.Duration(*grace)*time.Second <= delay+timeout {
		t.Errorf("terminationGracePeriodSeconds = %d, want more than preStop + SERVER_SHUTDOWN_TIMEOUT = %v", *grace, delay+timeout)
	}
}

// TestRBAC: each program runs as its own service account; the only
// pods with a token are those whose account a Role is bound to, in their own
// namespace, and those Roles only read. What each may read the cluster's
// authorizer answers (TestLeastPrivilege in infra/e2e).
func TestRBAC(t *testing.T) {
	for _, dir := range []string{".", "operator"} {
		tr := mustBuild(t, dir)
		for id := range tr.raw {
			if strings.HasPrefix(id, "clusterrole") {
				t.Errorf("%s: %s: cluster-wide RBAC, want Roles in namespace %s only", dir, id, namespace)
			}
		}
		bound := map[string]bool{}
		for name, rb := range tr.roleBindings {
			role := tr.roles[rb.RoleRef.Name]
			if rb.RoleRef.Kind != "Role" || role == nil {
				t.Errorf("%s: rolebinding/%s binds %s %s, not a Role of the tree", dir, name, rb.RoleRef.Kind, rb.RoleRef.Name)
				continue
			}
			for _, r := range role.Rules {
				for _, v := range r.Verbs {
					if v != "get" && v != "list" && v != "watch" {
						t.Errorf("%s: role/%s may %s %v: only reading is granted", dir, role.Name, v, r.Resources)
					}
				}
			}
			for _, sub := range rb.Subjects {
				if sub.Kind != "ServiceAccount" || sub.Namespace != namespace || tr.serviceAccounts[sub.Name] == nil {
					t.Errorf("%s: rolebinding/%s: subject %+v is not a service account of the tree", dir, name, sub)
				}
				bound[sub.Name] = true
			}
		}
		for name, d := range tr.deployments {
			pod := d.Spec.Template.Spec
			if pod.ServiceAccountName != name || tr.serviceAccounts[name] == nil {
				t.Errorf("%s: deployment/%s: service account %q, want its own account %q", dir, name, pod.ServiceAccountName, name)
			}
			if sa := tr.serviceAccounts[name]; sa != nil && (sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
				t.Errorf("%s: serviceaccount/%s: automountServiceAccountToken is not false: each pod says whether it needs one", dir, name)
			}
			if got := pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken; got != bound[name] {
				t.Errorf("%s: deployment/%s: automountServiceAccountToken = %v, but its account is bound to a Role: %v", dir, name, got, bound[name])
			}
		}
	}
}

// traceIDLabel is the exemplar label of the programs' latency histograms
// (platform.TraceIDKey), which Grafana's exemplar links read.
const traceIDLabel = "trace_id"

// TestConfigMapsRollOnlyWhatDoesNotReload: a ConfigMap whose files its
// program re-reads (Prometheus, Grafana) has a fixed name and is mounted
// without subPath, so an edit reaches the running pod; one read only at
// start (Jaeger's file, the programs' environment) carries kustomize's
// content hash in its name, so an edit rolls the Deployments that use it.
func TestConfigMapsRollOnlyWhatDoesNotReload(t *testing.T) {
	reloads := map[string]bool{"prometheus": true, "grafana": true}
	tr := mustBuild(t, ".")
	for name, cm := range tr.configMaps {
		users := configMapUsers(tr, name)
		if len(users) == 0 {
			t.Errorf("ConfigMap %s: no Deployment reads it", name)
			continue
		}
		hashed := hashSuffixed(t, tr.raw["configmap/"+name])
		for _, u := range users {
			switch {
			case reloads[u.deployment] && (hashed || u.subPath):
				t.Errorf("deployment/%s reloads ConfigMap %s, which must keep one name and be mounted without subPath", u.deployment, name)
			case !reloads[u.deployment] && !hashed:
				t.Errorf("deployment/%s reads ConfigMap %s only at start: its name must carry the content hash (labels %v)", u.deployment, name, cm.Labels)
			}
		}
	}
}

// configMapUser is a Deployment that reads a ConfigMap, mounted (subPath or
// not) or as its environment.
type configMapUser struct {
	deployment string
	subPath    bool
}

// configMapUsers returns the Deployments of tr that read the ConfigMap name.
func configMapUsers(tr *tree, name string) []configMapUser {
	var out []configMapUser
	for dn, d := range tr.deployments {
		pod := d.Spec.Template.Spec
		for _, v := range pod.Volumes {
			if v.ConfigMap == nil || v.ConfigMap.Name != name {
				continue
			}
			u := configMapUser{deployment: dn}
			for _, c := range pod.Containers {
				for _, m := range c.VolumeMounts {
					u.subPath = u.subPath || m.Name == v.Name && m.SubPath != ""
				}
			}
			out = append(out, u)
		}
		for _, c := range pod.Containers {
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil && e.ConfigMapRef.Name == name {
					out = append(out, configMapUser{deployment: dn})
				}
			}
		}
	}
	return out
}

// hashSuffixed reports whether the ConfigMap's name ends in the hash of its
// content that kustomize appends: name-HASH, HASH computed on the object
// named name.
func hashSuffixed(t *testing.T, raw []byte) bool {
	t.Helper()
	node, err := kyaml.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	name := node.GetName()
	i := strings.LastIndex(name, "-")
	if i < 0 {
		return false
	}
	if err := node.SetName(name[:i]); err != nil {
		t.Fatal(err)
	}
	h, err := (&hasher.Hasher{}).Hash(node)
	if err != nil {
		t.Fatal(err)
	}
	return h == name[i+1:]
}

func mountPath(t *testing.T, d *appsv1.Deployment, configMap string) string {
	t.Helper()
	pod := d.Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != configMap {
			continue
		}
		for _, m := range pod.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				return m.MountPath
			}
		}
	}
	t.Fatalf("deployment/%s does not mount ConfigMap %s", d.Name, configMap)
	return ""
}

// prometheusConfig is the part of prometheus.yml these tests read;
// promtool check config validates the whole file.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `json:"scrape_interval"`
	} `json:"global"`
	ScrapeConfigs []struct {
		JobName             string `json:"job_name"`
		KubernetesSDConfigs []struct {
			Role       string `json:"role"`
			Namespaces struct {
				Names        []string `json:"names"`
				OwnNamespace bool     `json:"own_namespace"`
			} `json:"namespaces"`
		} `json:"kubernetes_sd_configs"`
		RelabelConfigs []struct {
			SourceLabels []string `json:"source_labels"`
			Regex        string   `json:"regex"`
			Action       string   `json:"action"`
			TargetLabel  string   `json:"target_label"`
		} `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

func TestPrometheusScrapesTheMetricsServices(t *testing.T) {
	tr := mustBuild(t, ".")
	data, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.configMaps["prometheus-config"].Data["prometheus.yml"]; got != string(data) {
		t.Error("ConfigMap prometheus-config does not hold prometheus/prometheus.yml")
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	// Every Service with a metrics port is the target of one job, named
	// after the app it serves.
	kept := map[string]string{} // job -> Service
	for _, svc := range tr.services {
		if slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" }) {
			kept[svc.Labels["app"]] = svc.Name
		}
	}
	for _, sc := range cfg.ScrapeConfigs {
		svc, ok := kept[sc.JobName]
		if !ok {
			continue
		}
		delete(kept, sc.JobName)
		// Its own namespace, whichever it is: environments side by side
		// in one cluster each scrape only their own pods.
		if len(sc.KubernetesSDConfigs) != 1 || sc.KubernetesSDConfigs[0].Role != "endpointslice" ||
			!sc.KubernetesSDConfigs[0].Namespaces.OwnNamespace || len(sc.KubernetesSDConfigs[0].Namespaces.Names) != 0 {
			t.Errorf("job %s: want one endpointslice discovery restricted to Prometheus's own namespace", sc.JobName)
		}
		if len(sc.RelabelConfigs) == 0 {
			t.Errorf("job %s has no relabel configs", sc.JobName)
			continue
		}
		keep := sc.RelabelConfigs[0]
		wantSources := []string{"__meta_kubernetes_service_name", "__meta_kubernetes_endpointslice_port_name"}
		if keep.Action != "keep" || !slices.Equal(keep.SourceLabels, wantSources) || keep.Regex != svc+";metrics" {
			t.Errorf("job %s: first relabel = %+v, want keep %v =~ %s;metrics", sc.JobName, keep, wantSources, svc)
		}
		// The kept Service and port must exist, or the job finds no target.
		s := tr.services[svc]
		if s == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" }) {
			t.Errorf("job %s keeps service %s port metrics, which the manifests do not define", sc.JobName, svc)
		}
		targets := map[string]bool{}
		for _, rc := range sc.RelabelConfigs[1:] {
			targets[rc.TargetLabel] = true
		}
		for _, l := range []string{"namespace", "pod", "service"} {
			if !targets[l] {
				t.Errorf("job %s: no relabel to target label %s", sc.JobName, l)
			}
		}
	}
	if len(kept) != 0 {
		t.Errorf("metrics Services no job scrapes (job -> Service): %v", kept)
	}
	c := container(t, tr, "prometheus")
	if !slices.Contains(c.Args, "--config.file="+mountPath(t, tr.deployments["prometheus"], "prometheus-config")+"/prometheus.yml") {
		t.Errorf("prometheus args %v do not read the mounted prometheus.yml", c.Args)
	}
	if !slices.Contains(c.Args, "--config.auto-reload") {
		t.Errorf("prometheus args %v: no --config.auto-reload, a config edit would need a restart", c.Args)
	}
}

func TestPrometheusKeepsDataOnAnEmptyDir(t *testing.T) {
	tr := mustBuild(t, ".")
	d := tr.deployments["prometheus"]
	c := container(t, tr, "prometheus")
	if !slices.Contains(c.Args, "--storage.tsdb.path=/prometheus") {
		t.Fatalf("prometheus args %v: want --storage.tsdb.path=/prometheus", c.Args)
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath != "/prometheus" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil {
				if v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Cmp(resource.MustParse("64Mi")) < 0 {
					t.Errorf("prometheus data emptyDir has no useful sizeLimit: %v", v.EmptyDir.SizeLimit)
				}
				return
			}
		}
	}
	t.Error("prometheus /prometheus is not an emptyDir volume")
}

func TestGrafanaProvisioning(t *testing.T) {
	tr := mustBuild(t, ".")
	d := tr.deployments["grafana"]
	c := container(t, tr, "grafana")
	for k, want := range map[string]string{
		"GF_AUTH_ANONYMOUS_ENABLED":  "true",
		"GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
	} {
		if got := env(c, k); got != want {
			t.Errorf("grafana %s = %q, want %q", k, got, want)
		}
	}
	for _, e := range c.Env {
		if strings.Contains(e.Name, "PASSWORD") {
			t.Errorf("grafana env %s: no password is committed", e.Name)
		}
	}
	if got := mountPath(t, d, "grafana-datasources"); got != "/etc/grafana/provisioning/datasources" {
		t.Errorf("datasources mounted at %s", got)
	}
	if got := mountPath(t, d, "grafana-dashboard-providers"); got != "/etc/grafana/provisioning/dashboards" {
		t.Errorf("dashboard providers mounted at %s", got)
	}

	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string `json:"name"`
			Type      string `json:"type"`
			UID       string `json:"uid"`
			Access    string `json:"access"`
			URL       string `json:"url"`
			IsDefault bool   `json:"isDefault"`
			Editable  bool   `json:"editable"`
			JSONData  struct {
				TimeInterval                string `json:"timeInterval"`
				ExemplarTraceIDDestinations []struct {
					Name            string `json:"name"`
					DatasourceUID   string `json:"datasourceUid"`
					URL             string `json:"url"`
					URLDisplayLabel string `json:"urlDisplayLabel"`
				} `json:"exemplarTraceIdDestinations"`
			} `json:"jsonData"`
		} `json:"datasources"`
	}
	if err := yaml.UnmarshalStrict([]byte(tr.configMaps["grafana-datasources"].Data["datasources.yaml"]), &ds); err != nil {
		t.Fatalf("datasources.yaml: %v", err)
	}
	uids := map[string]string{} // uid -> type
	for _, d := range ds.Datasources {
		uids[d.UID] = d.Type
		// Each URL names a Service port of the tree.
		host, port, _ := strings.Cut(strings.TrimPrefix(d.URL, "http://"), ":")
		svc := tr.services[host]
		if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return fmt.Sprint(p.Port) == port }) {
			t.Errorf("datasource %s: URL %s names no Service port of the manifests", d.Name, d.URL)
		}
	}
	if uids["prometheus"] != "prometheus" {
		t.Errorf("no Prometheus datasource of uid prometheus, which the dashboards name: %v", uids)
	}
	// Every exemplar of a latency panel leads on: to a trace in a provisioned
	// tracing datasource, or to a URL whose variables Grafana's container
	// defines ($$ is a literal $).
	var toTraces bool
	for _, d := range ds.Datasources {
		for _, dest := range d.JSONData.ExemplarTraceIDDestinations {
			if dest.Name != traceIDLabel {
				t.Errorf("exemplar destination %+v: label %q, want the programs' %q", dest, dest.Name, traceIDLabel)
			}
			if dest.DatasourceUID != "" {
				toTraces = toTraces || uids[dest.DatasourceUID] == "jaeger"
				if uids[dest.DatasourceUID] == "" {
					t.Errorf("exemplar destination %+v names no provisioned datasource", dest)
				}
				continue
			}
			for _, v := range regexp.MustCompile(`\$\$|\$\{?([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(dest.URL, -1) {
				if v[1] != "" && env(c, v[1]) == "" {
					t.Errorf("exemplar destination URL %s: $%s is not set on Grafana's container", dest.URL, v[1])
				}
			}
		}
	}
	if !toTraces {
		t.Errorf("no exemplar destination leads to the Jaeger datasource")
	}

	var providers struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			OrgID                 int    `json:"orgId"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	if err := yaml.UnmarshalStrict([]byte(tr.configMaps["grafana-dashboard-providers"].Data["dashboards.yaml"]), &providers); err != nil {
		t.Fatalf("dashboards.yaml: %v", err)
	}
	if len(providers.Providers) != 1 {
		t.Fatalf("dashboard providers = %d, want 1", len(providers.Providers))
	}
	p := providers.Providers[0]
	if want := mountPath(t, d, "grafana-dashboards"); p.Options.Path != want {
		t.Errorf("provider path = %q, want the grafana-dashboards mount %q", p.Options.Path, want)
	}
	if p.Type != "file" || p.AllowUIUpdates || p.UpdateIntervalSeconds <= 0 || p.UpdateIntervalSeconds > 10 {
		t.Errorf("provider = %+v, want type file, allowUiUpdates false, updateIntervalSeconds in 1..10", p)
	}

	// Every JSON file of dashboards/ reaches the ConfigMap.
	files, err := filepath.Glob(filepath.Join("..", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want, have []string
	for _, f := range files {
		want = append(want, filepath.Base(f))
	}
	for k := range tr.configMaps["grafana-dashboards"].Data {
		have = append(have, k)
	}
	slices.Sort(have)
	if len(want) == 0 || !slices.Equal(want, have) {
		t.Errorf("grafana-dashboards keys = %v, want the dashboards/*.json files %v", have, want)
	}
}

// The dev overlay differs from the base only in what the live update needs:
// a writable root filesystem and the hand-over of the sockets.
func TestDevOverlayChangesOnlyWhatLiveUpdateNeeds(t *testing.T) {
	base, dev := mustBuild(t, "."), mustBuild(t, "dev")
	var baseIDs, devIDs []string
	for id := range base.raw {
		baseIDs = append(baseIDs, id)
	}
	for id := range dev.raw {
		devIDs = append(devIDs, id)
	}
	slices.Sort(baseIDs)
	slices.Sort(devIDs)
	if diff := cmp.Diff(baseIDs, devIDs); diff != "" {
		t.Fatalf("objects (-base +dev):\n%s", diff)
	}
	for _, name := range []string{"server", "client"} {
		d := dev.deployments[name].DeepCopy()
		c := &d.Spec.Template.Spec.Containers[0]
		if s := c.SecurityContext; s == nil || s.ReadOnlyRootFilesystem == nil || *s.ReadOnlyRootFilesystem {
			t.Errorf("dev deployment/%s: readOnlyRootFilesystem is not false (live update writes /app/%s)", name, name)
			continue
		}
		handover := strings.ToUpper(name) + "_HANDOVER"
		if got := env(c, handover); got != "true" {
			t.Errorf("dev deployment/%s: %s=%q, want true (live update hands the sockets over)", name, handover, got)
		}
		// Undo both: what is left must equal the base.
		readOnly := true
		c.SecurityContext.ReadOnlyRootFilesystem = &readOnly
		c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == handover })
		if diff := cmp.Diff(base.deployments[name], d); diff != "" {
			t.Errorf("dev deployment/%s differs from base beyond readOnlyRootFilesystem and %s (-base +dev):\n%s", name, handover, diff)
		}
	}
	for _, id := range baseIDs {
		if id == "deployment/server" || id == "deployment/client" {
			continue
		}
		if diff := cmp.Diff(string(base.raw[id]), string(dev.raw[id])); diff != "" {
			t.Errorf("dev changes %s (-base +dev):\n%s", id, diff)
		}
	}
}

// TestDeployedTreesCarryNoDebugging: Delve and the pprof listener are Tilt's
// debug mode only (the Tiltfile's --debug). What deploys without Tilt runs
// the programs themselves, with no debug listener and no debugger port.
func TestDeployedTreesCarryNoDebugging(t *testing.T) {
	for _, dir := range []string{".", "base", "app", "operator", "dev"} {
		tr := mustBuild(t, dir)
		for name, d := range tr.deployments {
			for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
				where := fmt.Sprintf("%s: deployment/%s container %s", dir, name, c.Name)
				for _, arg := range append(slices.Clone(c.Command), c.Args...) {
					if strings.Contains(arg, "dlv") {
						t.Errorf("%s runs Delve (%q)", where, arg)
					}
				}
				for _, e := range c.Env {
					if strings.HasSuffix(e.Name, "_DEBUG_PORT") {
						t.Errorf("%s sets %s: its pprof listener is for Tilt's debug mode only", where, e.Name)
					}
				}
				for _, p := range c.Ports {
					if p.ContainerPort == 2345 || p.ContainerPort == 6060 {
						t.Errorf("%s declares port %d, a debug port", where, p.ContainerPort)
					}
				}
			}
		}
	}
}

// TestTreesMoveToAnotherNamespace: the manifests name their namespace only
// in kustomize's namespace field, so an overlay that sets another one (what
// `kustomize edit set namespace` writes) moves everything, and leaves no
// reference to the old one in a name, a subject or a configuration.
func TestTreesMoveToAnotherNamespace(t *testing.T) {
	for _, dir := range []string{"base", "operator"} {
		abs, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		overlay := t.TempDir()
		rel, err := filepath.Rel(overlay, abs) // kustomize takes no absolute resource path
		if err != nil {
			t.Fatal(err)
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: elsewhere\nresources:\n  - " + rel + "\n"
		if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
		tr, err := build(overlay)
		if err != nil {
			t.Fatalf("%s moved to namespace elsewhere: %v", dir, err)
		}
		if len(tr.namespaces) != 1 || tr.namespaces[0].Name != "elsewhere" {
			t.Errorf("%s: namespaces %v, want the one namespace renamed to elsewhere", dir, tr.namespaces)
		}
		for _, rb := range tr.roleBindings {
			for _, s := range rb.Subjects {
				if s.Kind == "ServiceAccount" && s.Namespace != "elsewhere" {
					t.Errorf("%s: rolebinding/%s names service account %s in namespace %q", dir, rb.Name, s.Name, s.Namespace)
				}
			}
		}
		for id, data := range tr.raw {
			for _, old := range []string{"namespace: " + namespace + "\n", "." + namespace + ".svc", "- " + namespace + "\n"} {
				if strings.Contains(string(data), old) {
					t.Errorf("%s moved to namespace elsewhere: %s still has %q", dir, id, old)
				}
			}
		}
	}
}
