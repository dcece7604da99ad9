//go:build e2e

package e2e

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
)

// TestOtherClusters runs the environment on the current cluster under the
// names other clusters have, each in a kubeconfig of its own whose context
// and cluster bear that name: a local product Tilt knows (k3d), and a
// team's shared cluster that Tilt does not treat as local, first refused,
// then with two developers side by side, each in a namespace of their own.
func TestOtherClusters(t *testing.T) {
	if suite.tilt == "" {
		t.Skip("no tilt on PATH: these checks run a real Tilt")
	}
	ctx := t.Context()
	registry, err := localRegistry(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a local product under its own name", func(t *testing.T) {
		kc := kubeconfigAs(t, "k3d-grpc-metrics")
		out, err := tiltCommand(suite.root, tiltTarget{kubeconfig: kc}.env(), "ci", "--port", "10360", "--timeout", "10m")
		if err != nil {
			t.Fatalf("tilt ci under context k3d-grpc-metrics, no options: %v\n%s", err, tail(out))
		}
		t.Logf("tilt ci under context k3d-grpc-metrics with no options: passed")
		if suite.deploy == "tilt" {
			// Back to the suite's settings (two server pods, its client rate).
			if err := tiltCI(); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("a remote context is refused", func(t *testing.T) {
		kc := kubeconfigAs(t, "team-dev")
		const ns = "echo-refused"
		out, err := tiltCommand(suite.root, tiltTarget{kubeconfig: kc}.env(), "ci", "--port", "10361", "--timeout", "3m", "--", "--namespace", ns)
		if err == nil {
			t.Fatalf("tilt ci deployed to context team-dev without --allowed-context:\n%s", tail(out))
		}
		if !strings.Contains(out, "--allowed-context team-dev") {
			t.Errorf("the refusal does not name --allowed-context team-dev:\n%s", tail(out))
		}
		if _, err := suite.c.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s after the refusal: %v, want not found: something was applied", ns, err)
		}
		t.Logf("tilt ci under context team-dev refused before applying anything")
	})

	t.Run("two developers on a shared cluster", func(t *testing.T) {
		kc := kubeconfigAs(t, "team-dev")
		shared := []string{"--allowed-context", "team-dev", "--registry", registry}
		a := tiltTarget{kubeconfig: kc, ns: "echo-a", port: 10450, offset: 100, options: shared}
		b := tiltTarget{kubeconfig: kc, ns: "echo-b", port: 10550, offset: 200, options: shared}

		// Developer b's environment, left running by tilt ci.
		out, err := tiltCommand(suite.root, tiltTarget{kubeconfig: kc}.env(), append([]string{"ci", "--port", fmt.Sprint(b.port), "--timeout", "10m"}, b.args(1, 10)...)...)
		t.Cleanup(func() { tiltDown(t, b) })
		if err != nil {
			t.Fatalf("tilt ci in %s: %v\n%s", b.ns, err, tail(out))
		}
		// Developer a's, with tilt up, under load, to edit.
		s := startTiltAt(t, a, 1, suite.rate)

		for _, ns := range []string{a.ns, b.ns} {
			checkOwnNamespace(t, ns)
		}
		before := podStates(t, b.ns, "", uidAndRestarts)
		_, failed0 := s.calls.read(t)
		rs := s.editN(t, "server", 3)
		sum := summarize(rs)
		_, failed1 := s.calls.read(t)
		t.Logf("%d live updates in %s under load: through localhost:%d p50 %.2fs, max %.2fs; %v client calls failed",
			len(rs), a.ns, 20000+a.offset, sum.userP50.Seconds(), sum.userMax.Seconds(), failed1-failed0)
		if failed1 != failed0 {
			t.Errorf("%v calls failed in %s during its live updates, want 0", failed1-failed0, a.ns)
		}
		if after := podStates(t, b.ns, "", uidAndRestarts); !maps.Equal(before, after) {
			t.Errorf("the live updates in %s changed the pods of %s:\nbefore %v\nafter  %v", a.ns, b.ns, before, after)
		}

		// Developer a leaves: Ctrl-C, then tilt down with the same options.
		s.stop(t)
		tiltDown(t, a)
		err = poll(ctx, 3*time.Minute, "namespace "+a.ns+" gone after tilt down", func(ctx context.Context) (bool, string) {
			_, err := suite.c.client.CoreV1().Namespaces().Get(ctx, a.ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		if err != nil {
			t.Fatal(err)
		}
		if after := podStates(t, b.ns, "", uidAndRestarts); !maps.Equal(before, after) {
			t.Errorf("tilt down of %s changed the pods of %s:\nbefore %v\nafter  %v", a.ns, b.ns, before, after)
		}
		checkOwnNamespace(t, b.ns)
		t.Logf("tilt down of %s removed it, namespace included; %s kept its %d pods, uids and restart counts unchanged", a.ns, b.ns, len(before))
	})
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
	papi := prometheusAt(t, ns, mustPods(t, ns, "prometheus", false, 1)[0].Name)
	var want []string
	for _, app := range []string{"server", "client"} {
		pods, err := suite.c.runningPodsIn(ctx, ns, app)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			want = append(want, p.Name)
		}
	}
	slices.Sort(want)
	var up, elsewhere []string
	err := poll(ctx, time.Minute, ns+"'s Prometheus scraping exactly its pods", func(ctx context.Context) (bool, string) {
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
	addr := suite.c.portForwardIn(t, ns, mustPods(t, ns, "server", false, 0)[0].Name, 20000)
	if reply, err := echo(ctx, addr, ns); err != nil || reply != ns {
		t.Errorf("%s: the server answers %q, %v", ns, reply, err)
	}
	t.Logf("%s: Prometheus scrapes its %d pods, nothing elsewhere; its server answers", ns, len(want))
}
