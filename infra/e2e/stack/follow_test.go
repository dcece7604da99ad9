//go:build e2e

package stack

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// followTarget is the longest a ready server pod may wait for the client's
// first call: the client watches the Service's EndpointSlices.
const followTarget = 2 * time.Second

// TestClientFollowsServers: the client calls a server pod within
// followTarget of its being ready, whether the client started first or the
// pod came with a scale-up, and scaling down fails no call.
func TestClientFollowsServers(t *testing.T) {
	replicas := serverReplicas(t)
	t.Cleanup(func() { suite.Cluster.Scale(t, namespace, "server", replicas) })

	t.Run("the client starts before any server", clientBeforeServers)
	t.Run("scale up under load, then down", scaleUpThenDown)
}

// clientBeforeServers deletes the server, restarts the client and applies
// the server again: the client's first successful call comes within
// followTarget of the first server pod's being ready.
func clientBeforeServers(t *testing.T) {
	ctx := t.Context()
	saved := deleteServer(t)
	restart(t, "client")
	if err := suite.Cluster.WaitRollout(ctx, namespace, "client", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	calls := echo.NewCallCounter(t, suite.Cluster, namespace)
	ok0, _ := calls.Read(t)
	time.Sleep(3 * time.Second) // calling, with no server
	if ok, _ := calls.Read(t); ok != ok0 {
		t.Fatalf("the client made %v successful calls with no server", ok-ok0)
	}
	ready := watchReady(t)
	for _, o := range saved {
		if err := suite.Cluster.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	first := ready.next(t)
	var answered time.Time
	err := kube.Poll(ctx, time.Minute, "the client's first successful call", func(context.Context) (bool, string) {
		ok, failed := calls.Read(t)
		answered = time.Now()
		return ok > ok0, fmt.Sprintf("%v ok, %v failed", ok-ok0, failed)
	})
	if err != nil {
		t.Fatal(err)
	}
	took := answered.Sub(first.at)
	t.Logf("servers applied after the client: first server pod %s ready, the client's first successful call %.2fs later", first.pod, took.Seconds())
	if took > followTarget {
		t.Errorf("the first call came %.2fs after the first server pod was ready, want at most %v", took.Seconds(), followTarget)
	}
	if err := suite.Cluster.WaitRollout(ctx, namespace, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// scaleUpThenDown scales the server from 1 to 3 pods under load: the client
// calls each new pod within followTarget of its being ready; then back to
// 1, and no call fails either way.
func scaleUpThenDown(t *testing.T) {
	ctx := t.Context()
	ensureClientRate(t)
	suite.Cluster.Scale(t, namespace, "server", 1)
	calls := echo.NewCallCounter(t, suite.Cluster, namespace)
	_, failed0 := calls.Read(t)
	old := suite.Cluster.MustPods(t, namespace, "server", false, 1)
	ready := watchReady(t)
	suite.Cluster.Scale(t, namespace, "server", 3)
	// Each new pod: the first call the client makes to it, against the
	// moment it became ready.
	var wg sync.WaitGroup
	for range 2 {
		p := ready.next(t)
		if p.pod == old[0].Name {
			p = ready.next(t)
		}
		// The list every readyPoll may see a pod late, never early.
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := echo.MetricsURL(t, suite.Cluster, namespace, p.pod)
			var answered time.Time
			err := kube.Poll(ctx, time.Minute, "the client's first call to "+p.pod, func(context.Context) (bool, string) {
				n, err := echo.AnsweredCalls(url)
				answered = time.Now()
				return err == nil && n > 0, fmt.Sprint(n, err)
			})
			if err != nil {
				t.Error(err)
				return
			}
			// The forward was opened after the pod was ready: its
			// first scrape may come late, never early.
			took := answered.Sub(p.at)
			t.Logf("scale 1 -> 3: pod %s answered the client %.2fs after it was ready (at most; the scrape takes a port-forward)", p.pod, took.Seconds())
			if took > followTarget {
				t.Errorf("pod %s: first call of the client %.2fs after it was ready, want at most %v", p.pod, took.Seconds(), followTarget)
			}
		}()
	}
	wg.Wait()
	_, failed1 := calls.Read(t)
	suite.Cluster.Scale(t, namespace, "server", 1)
	if err := suite.Cluster.WaitRollout(ctx, namespace, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	_, failed2 := calls.Read(t)
	t.Logf("scale 1 -> 3 -> 1 at %d calls/s: %v calls failed up, %v down", suite.Rate, failed1-failed0, failed2-failed1)
	if failed2 != failed0 {
		t.Errorf("%v calls failed scaling up, %v scaling down, want 0", failed1-failed0, failed2-failed1)
	}
}

// readyPod is a server pod and the moment the test saw it ready.
type readyPod struct {
	pod string
	at  time.Time
}

// readyWatch reports each server pod as it becomes ready.
type readyWatch struct {
	first chan readyPod
}

// watchReady lists the server pods every readyPoll from now until the test
// ends, and sends each one the first time it is seen ready.
func watchReady(t *testing.T) readyWatch {
	t.Helper()
	rw := readyWatch{first: make(chan readyPod, 16)}
	ctx := t.Context()
	seen := map[string]bool{}
	go func() {
		for ctx.Err() == nil {
			list, err := suite.Cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=server"})
			now := time.Now()
			for i := range list.Items {
				p := &list.Items[i]
				if err != nil || seen[p.Name] || p.DeletionTimestamp != nil || !kube.PodReady(p) {
					continue
				}
				seen[p.Name] = true
				rw.first <- readyPod{pod: p.Name, at: now}
			}
			time.Sleep(readyPoll)
		}
	}()
	return rw
}

// next returns the next pod seen ready.
func (rw readyWatch) next(t *testing.T) readyPod {
	t.Helper()
	select {
	case p := <-rw.first:
		return p
	case <-time.After(3 * time.Minute):
		t.Fatal("no further server pod ready within 3m")
		return readyPod{}
	}
}

// readyPoll is how often watchReady lists the pods: the error of the
// moments it reports.
const readyPoll = 50 * time.Millisecond

// serverReplicas is the server Deployment's replica count.
func serverReplicas(t *testing.T) int32 {
	t.Helper()
	d, err := suite.Cluster.Client.AppsV1().Deployments(namespace).Get(t.Context(), "server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// serverObjects are the kinds deleteServer removes: the Deployment and its
// Services, as if they had never been applied.
var serverObjects = []struct {
	gvr  schema.GroupVersionResource
	name string
}{
	{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "server"},
	{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "server-service"},
	{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "server-metrics-service"},
}

// deleteServer deletes the server's Deployment and Services, waits until
// no server pod is left, and returns them as they can be created again.
func deleteServer(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	ctx := t.Context()
	var saved []*unstructured.Unstructured
	for _, o := range serverObjects {
		r := suite.Cluster.Dynamic.Resource(o.gvr).Namespace(namespace)
		u, err := r.Get(ctx, o.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range [][]string{{"metadata", "resourceVersion"}, {"metadata", "uid"}, {"metadata", "creationTimestamp"},
			{"metadata", "managedFields"}, {"metadata", "generation"}, {"status"}, {"spec", "clusterIP"}, {"spec", "clusterIPs"}} {
			unstructured.RemoveNestedField(u.Object, f...)
		}
		if u.GetKind() == "Service" && o.name == "server-service" {
			// Headless: clusterIP None stays.
			unstructured.SetNestedField(u.Object, "None", "spec", "clusterIP") //nolint:errcheck // a string into a map
		}
		saved = append(saved, u)
		background := metav1.DeletePropagationBackground
		if err := r.Delete(ctx, o.name, metav1.DeleteOptions{PropagationPolicy: &background}); err != nil {
			t.Fatal(err)
		}
	}
	err := kube.Poll(ctx, 3*time.Minute, "no server pod left", func(ctx context.Context) (bool, string) {
		pods, err := suite.Cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=server"})
		return err == nil && len(pods.Items) == 0, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	return saved
}
