//go:build e2e

package session

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// TestOtherClusters runs the environment on the current cluster under the
// names other clusters have, each in a kubeconfig of its own whose context
// and cluster bear that name: a local product Tilt knows (k3d), and a
// team's shared cluster that Tilt does not treat as local, first refused,
// then with two developers side by side, each in a namespace of their own.
func TestOtherClusters(t *testing.T) {
	if suite.Tilt == "" {
		t.Skip("no tilt on PATH: these checks run a real Tilt")
	}
	ctx := t.Context()
	registry, err := suite.Cluster.LocalRegistry(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a local product under its own name", func(t *testing.T) {
		kc := kubeconfigAs(t, "k3d-grpc-metrics")
		out, err := suite.Harness.Command(suite.Root, tiltsession.Target{Kubeconfig: kc}.Env(), "ci", "--port", "10360", "--timeout", "10m")
		if err != nil {
			t.Fatalf("tilt ci under context k3d-grpc-metrics, no options: %v\n%s", err, tiltsession.Tail(out))
		}
		t.Logf("tilt ci under context k3d-grpc-metrics with no options: passed")
	})

	t.Run("a remote context is refused", func(t *testing.T) {
		kc := kubeconfigAs(t, "team-dev")
		const ns = "echo-refused"
		out, err := suite.Harness.Command(suite.Root, tiltsession.Target{Kubeconfig: kc}.Env(), "ci", "--port", "10361", "--timeout", "3m", "--", "--namespace", ns)
		if err == nil {
			t.Fatalf("tilt ci deployed to context team-dev without --allowed-context:\n%s", tiltsession.Tail(out))
		}
		if !strings.Contains(out, "--allowed-context team-dev") {
			t.Errorf("the refusal does not name --allowed-context team-dev:\n%s", tiltsession.Tail(out))
		}
		if _, err := suite.Cluster.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s after the refusal: %v, want not found: something was applied", ns, err)
		}
		t.Logf("tilt ci under context team-dev refused before applying anything")
	})

	t.Run("two developers on a shared cluster", func(t *testing.T) { twoDevelopers(t, registry) })
}

// twoDevelopers runs two environments side by side on the current cluster
// named team-dev, each in a namespace of its own, with the images in
// registry: developer b's left running by tilt ci, developer a's under tilt
// up, edited under load, then torn down; b's pods see none of it.
func twoDevelopers(t *testing.T, registry string) {
	kc := kubeconfigAs(t, "team-dev")
	shared := []string{"--allowed-context", "team-dev", "--registry", registry}
	a := tiltsession.Target{Kubeconfig: kc, Namespace: "echo-a", Port: 10450, Offset: 100, Options: shared}
	b := tiltsession.Target{Kubeconfig: kc, Namespace: "echo-b", Port: 10550, Offset: 200, Options: shared}

	// Developer b's environment, left running by tilt ci.
	out, err := suite.Harness.Command(suite.Root, tiltsession.Target{Kubeconfig: kc}.Env(), append([]string{"ci", "--port", fmt.Sprint(b.Port), "--timeout", "10m"}, b.Args(1, 10)...)...)
	t.Cleanup(func() { suite.Harness.Down(t, b) })
	if err != nil {
		t.Fatalf("tilt ci in %s: %v\n%s", b.Namespace, err, tiltsession.Tail(out))
	}
	// Developer a's, with tilt up, under load, to edit.
	s := startTiltAt(t, a, 1, suite.Rate)

	for _, ns := range []string{a.Namespace, b.Namespace} {
		checkOwnNamespace(t, ns)
	}
	before := suite.Cluster.PodStates(t, b.Namespace, "", uidAndRestarts)
	_, failed0 := s.Calls.Read(t)
	rs := s.EditN(t, "server", 3)
	sum := tiltsession.Summarize(rs)
	_, failed1 := s.Calls.Read(t)
	t.Logf("%d live updates in %s under load: through localhost:%d p50 %.2fs, max %.2fs; %v client calls failed",
		len(rs), a.Namespace, 20000+a.Offset, sum.UserP50.Seconds(), sum.UserMax.Seconds(), failed1-failed0)
	if failed1 != failed0 {
		t.Errorf("%v calls failed in %s during its live updates, want 0", failed1-failed0, a.Namespace)
	}
	if after := suite.Cluster.PodStates(t, b.Namespace, "", uidAndRestarts); !maps.Equal(before, after) {
		t.Errorf("the live updates in %s changed the pods of %s:\nbefore %v\nafter  %v", a.Namespace, b.Namespace, before, after)
	}

	// Developer a leaves: Ctrl-C, then tilt down with the same options.
	s.Stop(t)
	suite.Harness.Down(t, a)
	err = kube.Poll(t.Context(), 3*time.Minute, "namespace "+a.Namespace+" gone after tilt down", func(ctx context.Context) (bool, string) {
		_, err := suite.Cluster.Client.CoreV1().Namespaces().Get(ctx, a.Namespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := suite.Cluster.PodStates(t, b.Namespace, "", uidAndRestarts); !maps.Equal(before, after) {
		t.Errorf("tilt down of %s changed the pods of %s:\nbefore %v\nafter  %v", a.Namespace, b.Namespace, before, after)
	}
	checkOwnNamespace(t, b.Namespace)
	t.Logf("tilt down of %s removed it, namespace included; %s kept its %d pods, uids and restart counts unchanged", a.Namespace, b.Namespace, len(before))
}

// kubeconfigAs writes a copy of the current kubeconfig whose current
// context and its cluster are named name, as another product or a team's
// cluster would name them, and returns its path.
func kubeconfigAs(t *testing.T, name string) string {
	t.Helper()
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		t.Fatal(err)
	}
	cur, ok := raw.Contexts[raw.CurrentContext]
	if !ok {
		t.Fatalf("kubeconfig: no current context")
	}
	ctx := cur.DeepCopy()
	cluster, user := raw.Clusters[ctx.Cluster], raw.AuthInfos[ctx.AuthInfo]
	if cluster == nil || user == nil {
		t.Fatalf("kubeconfig: context %s lacks its cluster or user", raw.CurrentContext)
	}
	ctx.Cluster, ctx.AuthInfo, ctx.Namespace = name, name, ""
	out := clientcmdapi.NewConfig()
	out.Contexts[name] = ctx
	out.Clusters[name] = cluster.DeepCopy()
	out.AuthInfos[name] = user.DeepCopy()
	out.CurrentContext = name
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// uidAndRestarts is a pod's uid and its containers' restarts.
func uidAndRestarts(p corev1.Pod, restarts int32) string {
	return fmt.Sprintf("uid %s, %d restarts", p.UID, restarts)
}

// checkOwnNamespace checks an environment in namespace ns: its Prometheus
// scrapes every server and client pod of ns and no target elsewhere, and
// its server answers.
func checkOwnNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx := t.Context()
	papi := echo.PrometheusAt(t, suite.Cluster, ns, suite.Cluster.MustPods(t, ns, "prometheus", false, 1)[0].Name)
	var want []string
	for _, app := range []string{"server", "client"} {
		pods, err := suite.Cluster.RunningPods(ctx, ns, app)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			want = append(want, p.Name)
		}
	}
	slices.Sort(want)
	var up, elsewhere []string
	err := kube.Poll(ctx, time.Minute, ns+"'s Prometheus scraping exactly its pods", func(ctx context.Context) (bool, string) {
		targets, err := papi.Targets(ctx)
		if err != nil {
			return false, err.Error()
		}
		up, elsewhere = nil, nil
		for _, tg := range targets.Active {
			if job := string(tg.Labels["job"]); job != "server" && job != "client" {
				continue
			}
			if got := string(tg.Labels["namespace"]); got != ns {
				elsewhere = append(elsewhere, got+"/"+string(tg.Labels["pod"]))
			} else if tg.Health == promv1.HealthGood {
				up = append(up, string(tg.Labels["pod"]))
			}
		}
		slices.Sort(up)
		return slices.Equal(up, want) && len(elsewhere) == 0, ""
	})
	if err != nil {
		t.Errorf("%s: Prometheus scrapes %v up, targets in other namespaces %v; want exactly its pods %v", ns, up, elsewhere, want)
	}
	addr := suite.Cluster.PortForward(t, ns, suite.Cluster.MustPods(t, ns, "server", false, 0)[0].Name, 20000)
	if reply, err := echo.Echo(ctx, addr, ns); err != nil || reply != ns {
		t.Errorf("%s: the server answers %q, %v", ns, reply, err)
	}
	t.Logf("%s: Prometheus scrapes its %d pods, nothing elsewhere; its server answers", ns, len(want))
}
