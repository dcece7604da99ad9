//go:build e2e

package stack

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"example.com/grpc-metrics/infra/e2e/framework"
	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

// The API server stopped (SIGSTOP) as a laptop's sleep, a dropped VPN or
// an overloaded control plane stops it: the pods keep serving and the
// client keeps calling them; once it is back, the client follows the
// cluster again within seconds.

// podMetrics is the /metrics URL of a pod at its own address, which needs
// no API server (a port-forward does); it skips the test when this machine
// does not reach the pods' addresses.
func podMetrics(t *testing.T, pod corev1.Pod) string {
	t.Helper()
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, "9000") + "/metrics"
	if _, err := proctest.Scrape(url); err != nil {
		t.Skipf("this machine does not reach pod %s at its address (%v): the calls cannot be counted while the API server is stopped", pod.Name, err)
	}
	return url
}

// clientCalls reads the client's calls at url.
func clientCalls(t *testing.T, url string) (ok, failed float64) {
	t.Helper()
	mfs, err := proctest.Scrape(url)
	if err != nil {
		t.Fatalf("the client's metrics: %v", err)
	}
	return echo.ClientCalls(mfs)
}

// TestAPIServerPause: the API server stopped for kube.APIPause while the client
// calls at E2E_RATE. No call fails meanwhile, nor after it is back (the
// node controller then marks the node NotReady for a moment, and every pod
// with it); a server pod added after the resume gets the client's calls
// within 10s of its Ready.
func TestAPIServerPause(t *testing.T) {
	ctx := t.Context()
	client := podMetrics(t, suite.Cluster.MustPods(t, namespace, "client", true, 1)[0])
	servers := suite.Cluster.MustPods(t, namespace, "server", true, 0)
	ok0, failed0 := clientCalls(t, client)
	resume := kube.StopAPIServer(t)
	time.Sleep(kube.APIPause)
	ok1, failed1 := clientCalls(t, client)
	resume()
	resumed := time.Now()
	t.Logf("the API server stopped for %v: the client made %v calls, %v failed", kube.APIPause, ok1-ok0, failed1-failed0)
	if failed1 > failed0 || ok1-ok0 < float64(suite.Rate)*kube.APIPause.Seconds()/2 {
		t.Errorf("while the API server was stopped: %v calls failed and %v succeeded, want 0 failed at %d/s", failed1-failed0, ok1-ok0, suite.Rate)
	}
	suite.Cluster.WaitAPI(t)
	t.Logf("the API server answered %.1fs after SIGCONT", time.Since(resumed).Seconds())
	time.Sleep(20 * time.Second)
	if _, failed2 := clientCalls(t, client); failed2 > failed1 {
		t.Errorf("%v calls failed in the 20s after the API server was back, want 0", failed2-failed1)
	}
	if events, err := suite.Cluster.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=NodeNotReady"}); err == nil {
		n := 0
		for _, e := range events.Items {
			if e.LastTimestamp.Time.After(resumed.Add(-time.Second)) || e.EventTime.Time.After(resumed.Add(-time.Second)) {
				n++
			}
		}
		t.Logf("pods marked not ready with their node (NodeNotReady events) after the API server was back: %d", n)
	}

	// One more server pod, once the client's watch is back.
	scale := func(n int) {
		patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
		// Not the test's context: this runs in its cleanup too.
		if _, err := suite.Cluster.Client.AppsV1().Deployments(namespace).Patch(context.Background(), "server", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale(len(servers) + 1)
	t.Cleanup(func() {
		scale(len(servers))
		if err := suite.Cluster.WaitRollout(context.Background(), namespace, "server", 3*time.Minute); err != nil {
			t.Error(err)
		}
	})
	var added corev1.Pod
	if err := proctest.Poll(ctx, 100*time.Millisecond, 3*time.Minute, "the added server pod ready", func(ctx context.Context) (bool, string) {
		pods, err := suite.Cluster.RunningPods(ctx, namespace, "server")
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods {
			if kube.PodReady(&p) && p.CreationTimestamp.Time.After(resumed.Add(-time.Second)) {
				added = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d ready server pods", len(pods))
	}); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	url := podMetrics(t, added)
	framework.TimedTarget(t, "a call of the client answered by "+added.Name+", added after the API server was back, after it was seen ready", ready, 50*time.Millisecond, 10*time.Second, func(context.Context) (bool, string) {
		n, err := echo.AnsweredCalls(url)
		return err == nil && n > 0, fmt.Sprint(n, err)
	})
}
