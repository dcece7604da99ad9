// Tests that run the real server and client binaries as processes on
// loopback ports.
package services_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "echo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./server", "./client")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// process is a running program whose output is kept for the test log.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs program with env (added to a clean environment) and stops it
// when the test ends.
func start(t *testing.T, program string, env ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(filepath.Join(binDir, program)), done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", program, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() //nolint:errcheck // it may have just exited
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", program, p.output())
		}
	})
	return p
}

// wait returns the exit code, or fails the test after timeout.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.cmd.Path, timeout)
		return -1
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// scrape fetches and parses /metrics on port; it returns nil when the
// listener is not answering yet.
func scrape(t *testing.T, port int) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the sum of the samples of family name whose labels include want.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// labelNames returns the sorted label names of family name's first sample.
func labelNames(mfs map[string]*dto.MetricFamily, name string) []string {
	ms := mfs[name].GetMetric()
	if len(ms) == 0 {
		return nil
	}
	var names []string
	for _, l := range ms[0].GetLabel() {
		names = append(names, l.GetName())
	}
	slices.Sort(names)
	return names
}

func serverEnv(grpcPort, metricsPort int, extra ...string) []string {
	return append([]string{
		"SERVER_GRPC_PORT=" + strconv.Itoa(grpcPort),
		"SERVER_METRICS_PORT=" + strconv.Itoa(metricsPort),
		"SERVER_SHUTDOWN_TIMEOUT=2s",
	}, extra...)
}

func clientEnv(grpcPort, metricsPort int, extra ...string) []string {
	return append([]string{
		"CLIENT_SERVER_ADDR=127.0.0.1:" + strconv.Itoa(grpcPort),
		"CLIENT_METRICS_PORT=" + strconv.Itoa(metricsPort),
		"CLIENT_RATE=50",
		"CLIENT_CONCURRENCY=2",
	}, extra...)
}

func TestServerAndClient(t *testing.T) {
	grpcPort, serverMetrics, clientMetrics := freePort(t), freePort(t), freePort(t)
	server := start(t, "server", serverEnv(grpcPort, serverMetrics)...)
	client := start(t, "client", clientEnv(grpcPort, clientMetrics)...)

	eventually(t, 10*time.Second, "client makes successful calls", func() bool {
		return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": "ok"}) >= 10
	})

	families := []struct {
		port   int
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{serverMetrics, "echo_request_duration_seconds", dto.MetricType_HISTOGRAM, []string{"api", "result"}},
		{serverMetrics, "echo_requests_total", dto.MetricType_COUNTER, []string{"api", "result"}},
		{serverMetrics, "echo_requests_in_flight", dto.MetricType_GAUGE, nil},
		{serverMetrics, "echo_server_build_info", dto.MetricType_GAUGE, []string{"branch", "goarch", "goos", "goversion", "revision", "tags", "version"}},
		{serverMetrics, "grpc_server_handled_total", dto.MetricType_COUNTER, []string{"grpc_code", "grpc_method", "grpc_service", "grpc_type"}},
		{serverMetrics, "grpc_server_handling_seconds", dto.MetricType_HISTOGRAM, []string{"grpc_method", "grpc_service", "grpc_type"}},
		{serverMetrics, "go_goroutines", dto.MetricType_GAUGE, nil},
		{serverMetrics, "process_resident_memory_bytes", dto.MetricType_GAUGE, nil},
		{clientMetrics, "echo_client_calls_total", dto.MetricType_COUNTER, []string{"result"}},
		{clientMetrics, "echo_client_build_info", dto.MetricType_GAUGE, []string{"branch", "goarch", "goos", "goversion", "revision", "tags", "version"}},
		{clientMetrics, "grpc_client_handled_total", dto.MetricType_COUNTER, []string{"grpc_code", "grpc_method", "grpc_service", "grpc_type"}},
		{clientMetrics, "grpc_client_handling_seconds", dto.MetricType_HISTOGRAM, []string{"grpc_method", "grpc_service", "grpc_type"}},
		{clientMetrics, "go_goroutines", dto.MetricType_GAUGE, nil},
	}
	scrapes := map[int]map[string]*dto.MetricFamily{serverMetrics: scrape(t, serverMetrics), clientMetrics: scrape(t, clientMetrics)}
	for _, f := range families {
		mf, ok := scrapes[f.port][f.name]
		if !ok {
			t.Errorf("port %d: no family %s", f.port, f.name)
			continue
		}
		if mf.GetType() != f.typ {
			t.Errorf("%s: type %v, want %v", f.name, mf.GetType(), f.typ)
		}
		if got := labelNames(scrapes[f.port], f.name); !slices.Equal(got, f.labels) {
			t.Errorf("%s: labels %v, want %v", f.name, got, f.labels)
		}
	}

	checkDashboardMetrics(t, scrapes[serverMetrics], scrapes[clientMetrics])

	srv := scrapes[serverMetrics]
	echoOK := map[string]string{"grpc_service": "foo.Foo", "grpc_method": "echo", "grpc_code": "OK"}
	if got := value(srv, "grpc_server_handled_total", echoOK); got < 10 {
		t.Errorf("grpc_server_handled_total{echo,OK} = %v, want >= 10", got)
	}
	if got := value(srv, "echo_requests_total", map[string]string{"api": "echo", "result": "ok"}); got < 10 {
		t.Errorf("echo_requests_total{result=ok} = %v, want >= 10", got)
	}
	if got := value(srv, "echo_request_duration_seconds", map[string]string{"api": "echo", "result": "ok"}); got < 10 {
		t.Errorf("echo_request_duration_seconds{result=ok} count = %v, want >= 10", got)
	}

	for _, port := range []int{serverMetrics, clientMetrics} {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
				t.Errorf("port %d %s: %s %q, want 200 ok", port, path, resp.Status, body)
			}
		}
	}

	// A clean stop: SIGTERM, exit 0 well within the 2s shutdown timeout.
	for _, p := range []*process{client, server} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Errorf("%s exited with %d after SIGTERM, want 0", p.cmd.Path, code)
		}
		if !strings.Contains(p.output(), `"msg":"stopped"`) {
			t.Errorf("%s did not log its stop", p.cmd.Path)
		}
	}
}

// checkDashboardMetrics checks that every series name the dashboards may query
// (dashboards/testdata/exported-metrics.txt) is one the binaries export.
func checkDashboardMetrics(t *testing.T, scrapes ...map[string]*dto.MetricFamily) {
	t.Helper()
	exported := map[string]bool{}
	for _, mfs := range scrapes {
		for name, mf := range mfs {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				exported[name+"_bucket"], exported[name+"_sum"], exported[name+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				exported[name], exported[name+"_sum"], exported[name+"_count"] = true, true, true
			default:
				exported[name] = true
			}
		}
	}
	data, err := os.ReadFile(filepath.Join("..", "dashboards", "testdata", "exported-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	listed := 0
	for line := range strings.Lines(string(data)) {
		name := strings.TrimSpace(line)
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		listed++
		if !exported[name] {
			t.Errorf("dashboards/testdata/exported-metrics.txt lists %s, which neither binary exports", name)
		}
	}
	if listed == 0 {
		t.Error("dashboards/testdata/exported-metrics.txt lists no metric")
	}
}

func TestClientSurvivesServerRestart(t *testing.T) {
	grpcPort, serverMetrics, clientMetrics := freePort(t), freePort(t), freePort(t)
	server := start(t, "server", serverEnv(grpcPort, serverMetrics)...)
	client := start(t, "client", clientEnv(grpcPort, clientMetrics, "CLIENT_TIMEOUT=200ms")...)
	calls := func(result string) float64 {
		return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": result})
	}
	eventually(t, 10*time.Second, "first successful calls", func() bool { return calls("ok") >= 5 })

	if err := server.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	server.wait(t, 5*time.Second)
	eventually(t, 5*time.Second, "failed calls counted while the server is gone", func() bool { return calls("error") >= 5 })
	select {
	case <-client.done:
		t.Fatalf("client exited while the server was gone: %v", client.err)
	default:
	}

	okBefore := calls("ok")
	start(t, "server", serverEnv(grpcPort, serverMetrics)...)
	took := eventually(t, 5*time.Second, "calls succeed again after the server returns", func() bool { return calls("ok") > okBefore+5 })
	t.Logf("calls succeeded again %v after the server restarted", took.Round(time.Millisecond))
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name     string
		program  string
		args     []string
		env      []string
		wantCode int
		wantOut  string
	}{
		{name: "server help", program: "server", args: []string{"--help"}, wantCode: 0, wantOut: "SERVER_GRPC_PORT"},
		{name: "client help", program: "client", args: []string{"-h"}, wantCode: 0, wantOut: "CLIENT_SERVER_ADDR"},
		{name: "server bad port", program: "server", env: []string{"SERVER_GRPC_PORT=99999"}, wantCode: 2,
			wantOut: "server: invalid configuration: SERVER_GRPC_PORT=99999: not a TCP port (1-65535)\n"},
		{name: "client bad rate", program: "client", env: []string{"CLIENT_RATE=-3"}, wantCode: 2,
			wantOut: "client: invalid configuration: CLIENT_RATE=-3: must be above 0 and at most 100000 calls per second\n"},
		{name: "server unknown flag", program: "server", args: []string{"-port=1"}, wantCode: 2,
			wantOut: `server: invalid configuration: unexpected argument "-port=1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(filepath.Join(binDir, tt.program), tt.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tt.env...)
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != tt.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", got, tt.wantCode, out)
			}
			if !strings.Contains(string(out), tt.wantOut) {
				t.Errorf("output %q lacks %q", out, tt.wantOut)
			}
		})
	}
}
