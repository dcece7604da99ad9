//go:build e2e

package stack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// quiet is how long without a new failed call ends a fault's failure window.
const quiet = 10 * time.Second

// TestFaults injects faults while the client calls at E2E_RATE, each with
// its target:
//   - a rolling update of the server fails no call;
//   - force-deleted server pods fail no call: the client stops calling a
//     pod the moment it leaves the Service's endpoints;
//   - a crashed server process, one of two the client calls, fails no call;
//   - a restarted Prometheus scrapes every target again within two scrape
//     intervals (10s) of being ready.
//
// Live updates under Tilt are TestLiveUpdateHandsOver's, in
// infra/e2e/session.
func TestFaults(t *testing.T) {
	if !suite.Faults {
		t.Skip("E2E_FAULTS=0")
	}
	ensureClientRate(t)
	calls := echo.NewCallCounter(t, suite.Cluster, namespace)
	time.Sleep(5 * time.Second) // the client finds every server

	t.Run("rolling update", func(t *testing.T) { rollingUpdate(t, calls) })
	t.Run("force-deleted server pods", func(t *testing.T) { forceDeleteServers(t, calls) })
	t.Run("crashed server processes", func(t *testing.T) { crashServers(t, calls) })
	t.Run("restarted Prometheus", restartPrometheus)
}

// rollingUpdate restarts the server Deployment and counts the client's
// calls until the old pods are gone: none may fail.
func rollingUpdate(t *testing.T, calls *echo.CallCounter) {
	ctx := t.Context()
	old, err := suite.Cluster.RunningPods(ctx, namespace, "server")
	if err != nil {
		t.Fatal(err)
	}
	ok0, failed0 := calls.Read(t)
	began := time.Now()
	restart(t, "server")
	if err := suite.Cluster.WaitRollout(ctx, namespace, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The old pods answer through their preStop wait: count until they are gone.
	for _, p := range old {
		waitGone(t, p.Name)
	}
	time.Sleep(2 * time.Second)
	ok1, failed1 := calls.Read(t)
	t.Logf("rolling update in %v: %v calls ok, %v failed", time.Since(began).Round(time.Second), ok1-ok0, failed1-failed0)
	if failed1 != failed0 || ok1 <= ok0 {
		t.Errorf("rolling update: %v calls failed, %v succeeded; want 0 failed", failed1-failed0, ok1-ok0)
	}
}

// forceDeleteServers force-deletes a random server pod three times: no
// call of the client may fail.
func forceDeleteServers(t *testing.T, calls *echo.CallCounter) {
	ctx := t.Context()
	zero := int64(0)
	for i := range 3 {
		pod := randomServer(t)
		failed, window := failureWindow(t, calls, func() {
			if err := suite.Cluster.Client.CoreV1().Pods(namespace).Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("force-deleted %s: %v calls failed, the last %.1fs after the fault", pod, failed, window.Seconds())
		if failed != 0 {
			t.Errorf("force-deleted %s: %v calls failed (the last %.1fs after the fault), want 0", pod, failed, window.Seconds())
		}
		if err := suite.Cluster.WaitRollout(ctx, namespace, "server", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		// The client, which watches the Service's EndpointSlices,
		// calls the replacement as soon as it is ready.
		if i < 2 {
			waitCallsReachEveryServer(t)
		}
	}
}

// crashServers crashes the server process of each server pod in turn: no
// call of the client may fail, its retries going to the other pod.
func crashServers(t *testing.T, calls *echo.CallCounter) {
	ctx := t.Context()
	pods, err := suite.Cluster.RunningPods(ctx, namespace, "server")
	if err != nil || len(pods) < 2 {
		t.Fatalf("want two running server pods, have %d (%v)", len(pods), err)
	}
	for _, p := range pods {
		// One of two pods crashes: the client must be calling both. A
		// pod that restarts leaves the Service's endpoints until it is
		// ready again, and the client calls it again once it is.
		waited := waitCallsReachEveryServer(t)
		// SIGQUIT makes the Go runtime dump its goroutines and exit at once:
		// connections cut, no draining; the kubelet restarts the container.
		failed, window := failureWindow(t, calls, func() {
			if _, stderr, err := suite.Cluster.Exec(ctx, namespace, p.Name, nil, "kill", "-QUIT", "1"); err != nil {
				t.Fatalf("kill -QUIT 1 in %s: %v %s", p.Name, err, stderr)
			}
		})
		t.Logf("crashed the server in %s (the client called both pods, %.0fs after the last fault): %v calls failed, the last %.1fs after the fault",
			p.Name, waited.Seconds(), failed, window.Seconds())
		if failed != 0 {
			t.Errorf("crashed %s: %v calls failed, want 0: the client's retries go to the other pod", p.Name, failed)
		}
		waitReady(t, p.Name)
	}
}

// restartPrometheus restarts Prometheus: every server and client target
// must be up within two scrape intervals (10s) of its being ready.
func restartPrometheus(t *testing.T) {
	ctx := t.Context()
	restart(t, "prometheus")
	if err := suite.Cluster.WaitRollout(ctx, namespace, "prometheus", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	papi := prometheusAPI(t)
	want := len(suite.Cluster.MustPods(t, namespace, "server", false, 0)) + len(suite.Cluster.MustPods(t, namespace, "client", false, 0))
	var got int
	for time.Since(ready) < 30*time.Second {
		v, _, _, err := papi.Query(ctx, `count(up{job=~"server|client"} == 1)`, time.Now())
		if vec, ok := v.(model.Vector); err == nil && ok && len(vec) == 1 {
			got = int(vec[0].Value)
		}
		if got == want {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(ready)
	t.Logf("Prometheus restarted: %d of %d targets up %.1fs after it was ready", got, want, took.Seconds())
	if got != want || took > 10*time.Second {
		t.Errorf("restarted Prometheus: %d of %d targets up after %.1fs, want all within 10s (two scrape intervals)", got, want, took.Seconds())
	}
}

// restart rolls a deployment, as `kubectl rollout restart` does.
func restart(t *testing.T, deployment string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"e2e/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := suite.Cluster.Client.AppsV1().Deployments(namespace).Patch(t.Context(), deployment, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// randomServer returns a running server pod.
func randomServer(t *testing.T) string {
	t.Helper()
	pods := suite.Cluster.MustPods(t, namespace, "server", false, 0)
	return pods[rand.IntN(len(pods))].Name
}

// failureWindow runs fault, then watches the client's failed calls until
// quiet passes without a new one. It returns how many failed and when the
// last did, from the fault.
func failureWindow(t *testing.T, calls *echo.CallCounter, fault func()) (failed float64, window time.Duration) {
	t.Helper()
	_, failed0 := calls.Read(t)
	began := time.Now()
	fault()
	prev, last := failed0, began
	for time.Since(last) < quiet {
		time.Sleep(200 * time.Millisecond)
		if _, f := calls.Read(t); f != prev {
			prev, last = f, time.Now()
		}
	}
	return prev - failed0, last.Sub(began)
}

// waitCallsReachEveryServer waits until every running server pod answers
// the client's calls (its count of answered calls grows), and returns how
// long that took.
func waitCallsReachEveryServer(t *testing.T) time.Duration {
	t.Helper()
	began := time.Now()
	pods, err := suite.Cluster.RunningPods(t.Context(), namespace, "server")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		url := echo.MetricsURL(t, suite.Cluster, namespace, p.Name)
		n0 := -1.0
		err := kube.Poll(t.Context(), 2*time.Minute, "the client calls "+p.Name, func(context.Context) (bool, string) {
			n, err := echo.AnsweredCalls(url)
			if err != nil {
				return false, err.Error()
			}
			if n0 < 0 {
				n0 = n
			}
			return n > n0, fmt.Sprintf("answered %v calls, %v before", n, n0)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return time.Since(began)
}

// waitGone waits until the pod no longer exists.
func waitGone(t *testing.T, pod string) {
	t.Helper()
	if err := suite.Cluster.WaitPodGone(t.Context(), namespace, pod, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until the pod is ready again.
func waitReady(t *testing.T, pod string) {
	t.Helper()
	if err := suite.Cluster.WaitPodReady(t.Context(), namespace, pod, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}
