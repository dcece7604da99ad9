//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/proto/foopb"
)

// echoWait calls echo at addr on a new connection and waits for the answer
// as long as ctx allows.
func echoWait(ctx context.Context, addr, name string) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	reply, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: name})
	if err != nil {
		return "", err
	}
	return reply.GetMessage(), nil
}

// echo calls foo.Foo/echo at addr on a new connection.
func echo(ctx context.Context, addr, name string) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	reply, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: name})
	if err != nil {
		return "", err
	}
	return reply.GetMessage(), nil
}

// answered is the server's count of echo calls it answered, in a scrape.
func answered(mfs map[string]*dto.MetricFamily) float64 {
	return proctest.Value(mfs, "echo_requests_total", map[string]string{"result": "ok"})
}

// answeredCalls scrapes a server's metrics at url for its count of answered
// echo calls.
func answeredCalls(url string) (float64, error) {
	mfs, err := proctest.Scrape(url)
	if err != nil {
		return 0, err
	}
	return answered(mfs), nil
}

// callCounter reads the client's echo_client_calls_total through a
// port-forward to its pod.
type callCounter struct {
	pod, url string
}

func newCallCounter(t testing.TB, ns string) *callCounter {
	t.Helper()
	pods, err := suite.c.runningPodsIn(t.Context(), ns, "client")
	if err != nil || len(pods) != 1 {
		t.Fatalf("want one running client pod in %s, have %d (%v)", ns, len(pods), err)
	}
	fwd := suite.c.portForwardIn(t, ns, pods[0].Name, 9000)
	return &callCounter{pod: pods[0].Name, url: "http://" + fwd.addr[9000] + "/metrics"}
}

// read returns the calls that succeeded and failed so far.
func (c *callCounter) read(t testing.TB) (ok, failed float64) {
	t.Helper()
	var err error
	for range 20 { // the client may be restarting
		mfs, serr := proctest.Scrape(c.url)
		if err = serr; err == nil {
			return proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}),
				proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "error"})
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("client pod %s: %v", c.pod, err)
	return 0, 0
}

// ensureClientRate sets the client's rate and concurrency for the faults,
// and waits for the rollout when that changed anything.
func ensureClientRate(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	want := map[string]string{"CLIENT_RATE": strconv.Itoa(suite.rate), "CLIENT_CONCURRENCY": "4"}
	d, err := suite.c.client.AppsV1().Deployments(namespace).Get(ctx, "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cont := d.Spec.Template.Spec.Containers[0]
	var env []corev1.EnvVar
	for k, v := range want {
		found := false
		for _, e := range cont.Env {
			found = found || (e.Name == k && e.Value == v)
		}
		if !found {
			env = append(env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	if len(env) == 0 {
		return
	}
	patchJSON, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]any{{"name": cont.Name, "env": env}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := suite.c.client.AppsV1().Deployments(namespace).Patch(ctx, "client", types.StrategicMergePatchType, patchJSON, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := suite.c.waitRollout(ctx, "client", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// getJSON decodes the JSON answer of a GET; a status other than 200 is an error.
func getJSON(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
