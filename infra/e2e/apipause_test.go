//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"example.com/grpc-metrics/infra/proctest"
)

// The API server stopped (SIGSTOP) as a laptop's sleep, a dropped VPN or
// an overloaded control plane stops it: the pods keep serving and the
// client keeps calling them; once it is back, the client follows the
// cluster again within seconds.

// apiPause is how long the API server is stopped.
const apiPause = 60 * time.Second

// stopAPIServer stops the cluster's kube-apiserver, a process of this
// machine (a node that is this machine, or kind's node container), with
// SIGSTOP, and returns what resumes it (also done when the test ends).
func stopAPIServer(t *testing.T) (resume func()) {
	t.Helper()
	pid := 0
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		if b, err := os.ReadFile(c); err == nil && strings.TrimSpace(string(b)) == "kube-apiserver" {
			pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(c)))
			break
		}
	}
	if pid == 0 {
		t.Skip("no kube-apiserver process on this machine to stop: the cluster's control plane runs elsewhere")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP to kube-apiserver (pid %d): %v", pid, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT to kube-apiserver (pid %d): %v", pid, err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

// waitAPI waits until the API server answers again.
func waitAPI(t *testing.T) {
	t.Helper()
	if err := poll(t.Context(), time.Minute, "the API server answering", func(ctx context.Context) (bool, string) {
		_, err := suite.c.client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Fatal(err)
	}
}

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
	return proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}),
		proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "error"})
}

// TestAPIServerPause: the API server stopped for apiPause while the client
// calls at E2E_RATE. No call fails meanwhile, nor after it is back (the
// node controller then marks the node NotReady for a moment, and every pod
// with it); a server pod added after the resume gets the client's calls
// within 10s of its Ready.
func TestAPIServerPause(t *testing.T) {
	ctx := t.Context()
	client := podMetrics(t, mustPods(t, namespace, "client", true, 1)[0])
	servers := mustPods(t, namespace, "server", true, 0)
	ok0, failed0 := clientCalls(t, client)
	resume := stopAPIServer(t)
	time.Sleep(apiPause)
	ok1, failed1 := clientCalls(t, client)
	resume()
	resumed := time.Now()
	t.Logf("the API server stopped for %v: the client made %v calls, %v failed", apiPause, ok1-ok0, failed1-failed0)
	if failed1 > failed0 || ok1-ok0 < float64(suite.rate)*apiPause.Seconds()/2 {
		t.Errorf("while the API server was stopped: %v calls failed and %v succeeded, want 0 failed at %d/s", failed1-failed0, ok1-ok0, suite.rate)
	}
	waitAPI(t)
	t.Logf("the API server answered %.1fs after SIGCONT", time.Since(resumed).Seconds())
	time.Sleep(20 * time.Second)
	if _, failed2 := clientCalls(t, client); failed2 > failed1 {
		t.Errorf("%v calls failed in the 20s after the API server was back, want 0", failed2-failed1)
	}
	if events, err := suite.c.client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=NodeNotReady"}); err == nil {
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
		if _, err := suite.c.client.AppsV1().Deployments(namespace).Patch(context.Background(), "server", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	scale(len(servers) + 1)
	t.Cleanup(func() {
		scale(len(servers))
		if err := suite.c.waitRollout(context.Background(), "server", 3*time.Minute); err != nil {
			t.Error(err)
		}
	})
	var added corev1.Pod
	if err := proctest.Poll(ctx, 100*time.Millisecond, 3*time.Minute, "the added server pod ready", func(ctx context.Context) (bool, string) {
		pods, err := suite.c.runningPodsIn(ctx, namespace, "server")
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods {
			if podReady(&p) && p.CreationTimestamp.Time.After(resumed.Add(-time.Second)) {
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
	timedTarget(t, "a call of the client answered by "+added.Name+", added after the API server was back, after it was seen ready", ready, 50*time.Millisecond, 10*time.Second, func(context.Context) (bool, string) {
		n, err := answeredCalls(url)
		return err == nil && n > 0, fmt.Sprint(n, err)
	})
}
