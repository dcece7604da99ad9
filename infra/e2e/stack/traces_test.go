//go:build e2e

package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// jaegerAPI returns the base URL of Jaeger's API through a port-forward to
// its pod.
func jaegerAPI(t *testing.T) string {
	t.Helper()
	return "http://" + suite.Cluster.PortForward(t, namespace, suite.Cluster.MustPods(t, namespace, "jaeger", true, 0)[0].Name, 16686)
}

// TestTraces checks what only the cluster shows of the traces: the
// programs export to the Jaeger of the stack, and Prometheus keeps the
// exemplars that lead to them; Jaeger deleted under load costs no call;
// Jaeger's memory stays under its limit under a Load burst. What the
// programs export, and how a caller's traceparent is kept, are
// infra/programs' TestTraces and services/server's TestEchoTraces.
func TestTraces(t *testing.T) {
	t.Run("an exemplar of the client leads to its trace", exemplarLeadsToTrace)
	t.Run("Jaeger deleted under load", jaegerDeletedUnderLoad)
	t.Run("Jaeger's memory under load", jaegerMemoryUnderLoad)
}

// exemplarLeadsToTrace finds, through Prometheus, an exemplar of the
// client's latency whose trace Jaeger has, with the client's client span
// and the server's span its child.
func exemplarLeadsToTrace(t *testing.T) {
	ctx := t.Context()
	jaeger := jaegerAPI(t)
	papi := prometheusAPI(t)
	var tr echo.Trace
	var id string
	err := kube.Poll(ctx, 2*time.Minute, "an exemplar of grpc_client_handling_seconds whose trace Jaeger has", func(ctx context.Context) (bool, string) {
		results, err := papi.QueryExemplars(ctx, `grpc_client_handling_seconds_bucket{job="client"}`, time.Now().Add(-2*time.Minute), time.Now())
		if err != nil {
			return false, err.Error()
		}
		for _, r := range results {
			for _, e := range r.Exemplars {
				id = string(e.Labels["trace_id"])
				var ok bool
				if tr, ok = echo.GetTrace(ctx, jaeger, id); ok && tr.ClientAndServer() {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("last exemplar's trace %q: %d spans", id, len(tr.Spans))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exemplar trace_id %s: %d spans in Jaeger, the client's client span and the server's span its child", id, len(tr.Spans))
}

// jaegerDeletedUnderLoad deletes Jaeger's pod while the client calls: no
// call fails, and the client's traces reach the new Jaeger.
func jaegerDeletedUnderLoad(t *testing.T) {
	ctx := t.Context()
	ensureClientRate(t)
	calls := echo.NewCallCounter(t, suite.Cluster, namespace)
	old := suite.Cluster.MustPods(t, namespace, "jaeger", true, 1)
	ok0, failed0 := calls.Read(t)
	if err := suite.Cluster.Client.CoreV1().Pods(namespace).Delete(ctx, old[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, old[0].Name)
	if err := suite.Cluster.WaitRollout(ctx, namespace, "jaeger", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	api := jaegerAPI(t)
	err := kube.Poll(ctx, time.Minute, "the client's traces in the new Jaeger", func(ctx context.Context) (bool, string) {
		var got echo.Traces
		err := echo.GetJSON(ctx, fmt.Sprintf("%s/api/traces?service=client&limit=5&start=%d", api, back.UnixMicro()), &got)
		return err == nil && slices.ContainsFunc(got.Data, echo.Trace.ClientAndServer), fmt.Sprint(err)
	})
	if err != nil {
		t.Error(err)
	}
	ok1, failed1 := calls.Read(t)
	t.Logf("Jaeger deleted and back: %v calls ok, %v failed; traces flow again %v after its pod was ready",
		ok1-ok0, failed1-failed0, time.Since(back).Round(100*time.Millisecond))
	if failed1 != failed0 || ok1 <= ok0 {
		t.Errorf("%v calls failed (%v ok) while Jaeger was gone, want 0", failed1-failed0, ok1-ok0)
	}
}

// jaegerMemoryUnderLoad samples Jaeger's working set under the client's
// calls plus a Load burst (200 calls/s for 30s, as the Tilt button sends
// it): its peak stays under the limit, and it does not restart.
func jaegerMemoryUnderLoad(t *testing.T) {
	ctx := t.Context()
	serverAddr := suite.Cluster.PortForward(t, namespace, suite.Cluster.MustPods(t, namespace, "server", true, 0)[0].Name, 20000)
	ensureClientRate(t)
	pods := suite.Cluster.MustPods(t, namespace, "jaeger", true, 1)
	limit := pods[0].Spec.Containers[0].Resources.Limits.Memory().Value()
	// A Load burst as the Tilt button sends it: 200 calls/s for 30s,
	// on top of the client's calls.
	burst := echo.StartGhz(t, suite.Root, serverAddr, "load", 200, "30s")
	var peak int64
	for running := true; running; {
		select {
		case <-burst.Done():
			if code, sig := burst.Wait(t, time.Second); code != 0 {
				t.Errorf("ghz: exit code %d (signal %v)", code, sig)
			}
			running = false
		case <-time.After(2 * time.Second):
		}
		if ws, err := workingSet(ctx, pods[0]); err == nil {
			peak = max(peak, ws)
		}
	}
	for range 15 { // the store keeps growing up to its bound after the burst
		time.Sleep(2 * time.Second)
		if ws, err := workingSet(ctx, pods[0]); err == nil {
			peak = max(peak, ws)
		}
	}
	t.Logf("Jaeger's working set: peak %.0f MiB of its %.0f MiB limit, client at %d calls/s plus 200 calls/s for 30s", float64(peak)/(1<<20), float64(limit)/(1<<20), suite.Rate)
	if peak == 0 || peak >= limit {
		t.Errorf("Jaeger's peak working set %d bytes, want above 0 and below its limit %d", peak, limit)
	}
	if restarts := pods[0].Status.ContainerStatuses[0].RestartCount; restarts != 0 {
		t.Errorf("Jaeger restarted %d times", restarts)
	}
}

// workingSet reads the container's working set from the kubelet's summary
// API, through the API server.
func workingSet(ctx context.Context, pod corev1.Pod) (int64, error) {
	data, err := suite.Cluster.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", pod.Spec.NodeName, "proxy/stats/summary").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	var summary struct {
		Pods []struct {
			PodRef struct {
				Name, Namespace string
			} `json:"podRef"`
			Containers []struct {
				Name   string `json:"name"`
				Memory struct {
					WorkingSetBytes int64 `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"containers"`
		} `json:"pods"`
	}
	if err := json.Unmarshal(data, &summary); err != nil {
		return 0, err
	}
	for _, p := range summary.Pods {
		if p.PodRef.Name == pod.Name && p.PodRef.Namespace == pod.Namespace && len(p.Containers) > 0 {
			return p.Containers[0].Memory.WorkingSetBytes, nil
		}
	}
	return 0, fmt.Errorf("pod %s not in the node's summary", pod.Name)
}
