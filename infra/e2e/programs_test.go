//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// echo is echoWait for at most 2s.
func echo(ctx context.Context, addr, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return echoWait(ctx, addr, name)
}

// startGhz runs ghz until the test ends: calls of echo with name at addr,
// rps a second for duration (a Go duration) on 8 connections.
func startGhz(t testing.TB, addr, name string, rps int, duration string) *proctest.Process {
	t.Helper()
	tools := filepath.Join(suite.root, "infra")
	cmd := exec.Command("go", "tool", "-n", "ghz") // builds it, once
	cmd.Dir = tools
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build ghz: %v", err)
	}
	return proctest.StartIn(t, tools, strings.TrimSpace(string(out)), os.Environ(),
		"--insecure", "--call", "foo.Foo/echo", "-d", fmt.Sprintf(`{"name":%q}`, name),
		"--rps", strconv.Itoa(rps), "-z", duration, "-c", "8", addr)
}

// metricsURL forwards a local port to the metrics port of pod ns/pod, and
// returns the URL of its /metrics.
func metricsURL(t testing.TB, ns, pod string) string {
	t.Helper()
	return "http://" + suite.c.portForwardIn(t, ns, pod, 9000) + "/metrics"
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
	pod := mustPods(t, ns, "client", false, 1)[0].Name
	return &callCounter{pod: pod, url: metricsURL(t, ns, pod)}
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

// get returns the body of a GET; a status other than 200 is an error.
func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// getJSON decodes the JSON answer of a GET made within 10s.
func getJSON(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	data, err := get(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}
