package infra_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/hasher"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"

	"example.com/grpc-metrics/infra"
)

// TestProgramsListenWhereTheyAreReached: the ports each program listens on
// (its PROGRAM_*_PORT settings, set or default) are exactly the container
// ports of those names, and every probe reaches a port the container
// declares. The places a port is written cannot drift apart, and a
// container declares no port its program does not serve.
func TestProgramsListenWhereTheyAreReached(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		for _, name := range programs {
			c := container(t, tr, name)
			listens, declared := map[string]string{}, map[string]string{}
			for key, v := range settings(t, name, c) {
				if kind, ok := strings.CutSuffix(strings.TrimPrefix(key, strings.ToUpper(name)+"_"), "_PORT"); ok && v != "" {
					listens[strings.ToLower(kind)] = v
				}
			}
			for _, p := range c.Ports {
				declared[p.Name] = fmt.Sprint(p.ContainerPort)
			}
			if diff := cmp.Diff(listens, declared); diff != "" {
				t.Errorf("deployment/%s: ports by name, listened on (-) and declared (+):\n%s", name, diff)
			}
			for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				var port intstr.IntOrString
				switch {
				case probe == nil:
					t.Errorf("deployment/%s has no %s probe", name, what)
					continue
				case probe.GRPC != nil:
					port = intstr.FromInt32(probe.GRPC.Port)
				case probe.HTTPGet != nil:
					port = probe.HTTPGet.Port
				default:
					t.Errorf("deployment/%s: the %s probe is neither gRPC nor HTTP", name, what)
					continue
				}
				if !hasPort(c.Ports, port) {
					t.Errorf("deployment/%s: the %s probe reaches port %s, which the container does not declare", name, what, port.String())
				}
			}
		}
	})
}

// TestServicesSelectPodsAndPorts: every Service selects the pods of one
// Deployment, on ports those pods declare.
func TestServicesSelectPodsAndPorts(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		for name, s := range tr.Services {
			var matched []*appsv1.Deployment
			for _, d := range tr.Deployments {
				if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
					matched = append(matched, d)
				}
			}
			if len(matched) != 1 {
				t.Errorf("service/%s selects the pods of %d deployments, want 1", name, len(matched))
				continue
			}
			for _, p := range s.Spec.Ports {
				if !hasPort(matched[0].Spec.Template.Spec.Containers[0].Ports, p.TargetPort) {
					t.Errorf("service/%s port %s: target port %s is not a port of deployment/%s", name, p.Name, p.TargetPort.String(), matched[0].Name)
				}
			}
		}
	})
}

// TestClientWatchesTheServerService: the client resolves the server's
// Service by its EndpointSlices, in its own namespace whichever it is, on a
// port the Service has; the Service stays headless for dns:/// callers.
func TestClientWatchesTheServerService(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		s := tr.Services["server-service"]
		if s == nil || len(s.Spec.Ports) != 1 {
			t.Fatalf("service server-service missing or without its one port: %v", s)
		}
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("server-service clusterIP = %q, want None (a DNS name answers every pod address)", s.Spec.ClusterIP)
		}
		c := container(t, tr, "client")
		want := fmt.Sprintf("kubernetes:///%s.$(POD_NAMESPACE):%s", s.Name, s.Spec.Ports[0].Name)
		if got := settings(t, "client", c)["CLIENT_SERVER_ADDR"]; got != want {
			t.Errorf("client CLIENT_SERVER_ADDR = %q, want %q", got, want)
		}
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAMESPACE" })
		j := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "CLIENT_SERVER_ADDR" })
		if i < 0 || i > j || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("client: POD_NAMESPACE is not the pod's namespace (downward API), defined before CLIENT_SERVER_ADDR uses it")
		}
	})
}

// TestServerShutdownFitsTheGracePeriod: the server keeps serving through a
// preStop sleep while clients move away, then drains within
// SERVER_SHUTDOWN_TIMEOUT, all before the kubelet's grace period ends; a
// rollout starts every new pod before it stops an old one.
func TestServerShutdownFitsTheGracePeriod(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		c := container(t, tr, "server")
		cfg := settings(t, "server", c)
		// The wait for clients to move away belongs to pod termination only: an
		// in-process delay would also hold up every restart of the process in
		// place (Tilt's live update), and a restart needs none.
		if d, err := time.ParseDuration(cfg["SERVER_SHUTDOWN_DELAY"]); err != nil || d != 0 {
			t.Errorf("SERVER_SHUTDOWN_DELAY = %s, want 0: the preStop hook waits instead", cfg["SERVER_SHUTDOWN_DELAY"])
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Fatalf("server container: no preStop sleep hook (lifecycle %+v)", c.Lifecycle)
		}
		// The client, which watches the EndpointSlices, has moved away before
		// the pod stops answering (docs/RESILIENCE.md).
		delay := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		if delay <= 0 {
			t.Errorf("preStop sleep = %v, want some: a client's watch may lag the pod's removal", delay)
		}
		timeout, err := time.ParseDuration(cfg["SERVER_SHUTDOWN_TIMEOUT"])
		if err != nil {
			t.Fatalf("SERVER_SHUTDOWN_TIMEOUT: %v", err)
		}
		d := tr.Deployments["server"]
		if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge == nil || ru.MaxSurge.String() != "100%" {
			t.Errorf("server rolling update = %+v, want maxSurge 100%% and maxUnavailable 0: every new pod ready before an old one stops", ru)
		}
		// The grace period counts from the start of the preStop hook.
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = *g
		}
		if time.Duration(grace)*time.Second <= delay+timeout {
			t.Errorf("terminationGracePeriodSeconds = %d, want more than preStop + SERVER_SHUTDOWN_TIMEOUT = %v", grace, delay+timeout)
		}
	})
}

// TestConfigMapsRollOnlyWhatDoesNotReload: a ConfigMap whose files its
// program re-reads (Prometheus, Grafana) has a fixed name and is mounted
// without subPath, so an edit reaches the running pod; one read only at
// start (Jaeger's file, the programs' environment) carries kustomize's
// content hash in its name, so an edit rolls the Deployments that use it.
func TestConfigMapsRollOnlyWhatDoesNotReload(t *testing.T) {
	reloads := map[string]bool{"prometheus": true, "grafana": true}
	tr := mustBuild(t, ".")
	read := map[string]bool{}
	check := func(deployment, name string, subPath bool) {
		read[name] = true
		switch hashed := hashSuffixed(t, tr.Raw["configmap/"+name]); {
		case reloads[deployment] && (hashed || subPath):
			t.Errorf("deployment/%s reloads ConfigMap %s, which must keep one name and be mounted without subPath", deployment, name)
		case !reloads[deployment] && !hashed:
			t.Errorf("deployment/%s reads ConfigMap %s only at start: its name must carry the content hash", deployment, name)
		}
	}
	for dn, d := range tr.Deployments {
		pod := d.Spec.Template.Spec
		for _, c := range pod.Containers {
			for _, v := range pod.Volumes {
				if v.ConfigMap != nil && slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name }) {
					check(dn, v.ConfigMap.Name, slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name && m.SubPath != "" }))
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					check(dn, e.ConfigMapRef.Name, false)
				}
			}
		}
	}
	for name := range tr.ConfigMaps {
		if !read[name] {
			t.Errorf("ConfigMap %s: no Deployment reads it", name)
		}
	}
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

// TestLogFormats: wherever the programs deploy they log JSON lines, for a
// log collector; the Tilt dev build (infra/dev) switches them to console
// lines, one readable line each in the Tilt UI's log panes.
func TestLogFormats(t *testing.T) {
	eachTree(t, func(t *testing.T, dir string, tr *infra.Tree) {
		for _, name := range programs {
			key := strings.ToUpper(name) + "_LOG_FORMAT"
			got := settings(t, name, container(t, tr, name))[key]
			if got == "" {
				got = "unset (json)"
			}
			want := []string{"unset (json)", "json"}
			if dir == "dev" {
				want = []string{"console"}
			}
			if !slices.Contains(want, got) {
				t.Errorf("deployment/%s: %s %s, want %s", name, key, got, strings.Join(want, " or "))
			}
		}
	})
}
