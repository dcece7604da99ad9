// Package echo is the echo environment seen from outside, as the checks of
// infra/e2e see it: calls of the server, the programs' metrics and the
// client's count of calls, a probe of each pod's process, load with ghz, and
// traces from Jaeger's API.
package echo

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

	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/proto/foopb"
)

// EchoWait calls echo at addr on a new connection and waits for the answer
// as long as ctx allows.
func EchoWait(ctx context.Context, addr, name string) (string, error) {
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

// Echo is echoWait for at most 2s.
func Echo(ctx context.Context, addr, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return EchoWait(ctx, addr, name)
}

// StartGhz runs ghz until the test ends: calls of echo with name at addr,
// rps a second for duration (a Go duration) on 8 connections.
func StartGhz(t testing.TB, root, addr, name string, rps int, duration string) *proctest.Process {
	t.Helper()
	tools := filepath.Join(root, "infra")
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

// MetricsURL forwards a local port to the metrics port of pod ns/pod, and
// returns the URL of its /metrics.
func MetricsURL(t testing.TB, c *kube.Cluster, ns, pod string) string {
	t.Helper()
	return "http://" + c.PortForward(t, ns, pod, 9000) + "/metrics"
}

// Answered is the server's count of echo calls it Answered, in a scrape.
func Answered(mfs map[string]*dto.MetricFamily) float64 {
	return proctest.Value(mfs, "echo_requests_total", map[string]string{"result": "ok"})
}

// AnsweredCalls scrapes a server's metrics at url for its count of answered
// echo calls.
func AnsweredCalls(url string) (float64, error) {
	mfs, err := proctest.Scrape(url)
	if err != nil {
		return 0, err
	}
	return Answered(mfs), nil
}

// ClientCalls is the client's count of its echo calls that succeeded and
// failed, in a scrape.
func ClientCalls(mfs map[string]*dto.MetricFamily) (ok, failed float64) {
	return proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}),
		proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "error"})
}

// CallCounter reads the client's echo_client_calls_total through a
// port-forward to its pod.
type CallCounter struct {
	pod, url string
}

func NewCallCounter(t testing.TB, c *kube.Cluster, ns string) *CallCounter {
	t.Helper()
	pod := c.MustPods(t, ns, "client", false, 1)[0].Name
	return &CallCounter{pod: pod, url: MetricsURL(t, c, ns, pod)}
}

// Read returns the calls that succeeded and failed so far.
func (c *CallCounter) Read(t testing.TB) (ok, failed float64) {
	t.Helper()
	var err error
	for range 20 { // the client may be restarting
		mfs, serr := proctest.Scrape(c.url)
		if err = serr; err == nil {
			return ClientCalls(mfs)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("client pod %s: %v", c.pod, err)
	return 0, 0
}

// Get returns the body of a GET; a status other than 200 is an error.
func Get(ctx context.Context, url string) ([]byte, error) {
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

// GetJSON decodes the JSON answer of a GET made within 10s.
func GetJSON(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	data, err := Get(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}

// RevisionOf is the revision in program's echo_<program>_build_info.
func RevisionOf(mfs map[string]*dto.MetricFamily, program string) string {
	for _, m := range mfs["echo_"+program+"_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "revision" {
				return l.GetValue()
			}
		}
	}
	return ""
}
