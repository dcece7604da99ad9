// Tests that run the real server and client binaries as processes on
// loopback ports.
package programs_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"example.com/grpc-metrics/infra/proctest"
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
	if err := proctest.Build(filepath.Join("..", ".."), dir, "server", "client"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := proctest.BuildSupervisor(filepath.Join("..", ".."), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// start runs program with env and stops it when the test ends.
func start(t *testing.T, program string, env ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, filepath.Join(binDir, program), env)
}

// startTimeout bounds a program's start, up to its "listening" log line.
const startTimeout = 10 * time.Second

// metricsURL returns the /metrics URL of p, once it listens.
func metricsURL(t *testing.T, p *proctest.Process) string {
	t.Helper()
	return "http://" + p.Addr(t, "metrics", startTimeout) + "/metrics"
}

// scrape fetches and parses /metrics at url; it returns nil when the listener
// is not answering.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := proctest.Scrape(url)
	if err != nil {
		t.Logf("scrape: %v", err)
		return nil
	}
	return mfs
}

var value = proctest.Value

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

// serverEnv is a server on free ports, plus extra settings.
func serverEnv(extra ...string) []string {
	return append([]string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0", "SERVER_SHUTDOWN_TIMEOUT=2s"}, extra...)
}

// clientEnv is a client of the server at grpcAddr, its metrics on a free port.
func clientEnv(grpcAddr string, extra ...string) []string {
	return append([]string{"CLIENT_SERVER_ADDR=" + grpcAddr, "CLIENT_METRICS_PORT=0", "CLIENT_RATE=50", "CLIENT_CONCURRENCY=2"}, extra...)
}

func TestServerAndClient(t *testing.T) {
	server := start(t, "server", serverEnv()...)
	client := start(t, "client", clientEnv(server.Addr(t, "grpc", startTimeout))...)
	serverMetrics, clientMetrics := metricsURL(t, server), metricsURL(t, client)

	proctest.Eventually(t, 10*time.Second, "client makes successful calls", func() bool {
		return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": "ok"}) >= 10
	})

	families := []struct {
		url    string
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
	scrapes := map[string]map[string]*dto.MetricFamily{serverMetrics: scrape(t, serverMetrics), clientMetrics: scrape(t, clientMetrics)}
	for _, f := range families {
		mf, ok := scrapes[f.url][f.name]
		if !ok {
			t.Errorf("%s: no family %s", f.url, f.name)
			continue
		}
		if mf.GetType() != f.typ {
			t.Errorf("%s: type %v, want %v", f.name, mf.GetType(), f.typ)
		}
		if got := labelNames(scrapes[f.url], f.name); !slices.Equal(got, f.labels) {
			t.Errorf("%s: labels %v, want %v", f.name, got, f.labels)
		}
	}

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

	checkHealth(t, serverMetrics, clientMetrics)

	// A clean stop: SIGTERM, exit 0 well within the 2s shutdown timeout.
	for _, p := range []*proctest.Process{client, server} {
		p.Signal(t, syscall.SIGTERM)
		if code, sig := p.Wait(t, 5*time.Second); code != 0 {
			t.Errorf("exit code %d (signal %v) after SIGTERM, want 0", code, sig)
		}
		if len(p.Events("stopped")) == 0 {
			t.Errorf("no stop logged:\n%s", p.Output())
		}
	}
}

// checkHealth checks that /healthz and /readyz, beside each of the metrics
// URLs, answer 200 ok.
func checkHealth(t *testing.T, metricsURLs ...string) {
	t.Helper()
	for _, metrics := range metricsURLs {
		for _, path := range []string{"/healthz", "/readyz"} {
			url := strings.TrimSuffix(metrics, "/metrics") + path
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
				t.Errorf("%s: %s %q, want 200 ok", url, resp.Status, body)
			}
		}
	}
}

func TestClientSurvivesServerRestart(t *testing.T) {
	server := start(t, "server", serverEnv()...)
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	client := start(t, "client", clientEnv(grpcAddr, "CLIENT_TIMEOUT=200ms")...)
	clientMetrics := metricsURL(t, client)
	calls := func(result string) float64 {
		return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": result})
	}
	proctest.Eventually(t, 10*time.Second, "first successful calls", func() bool { return calls("ok") >= 5 })

	server.Signal(t, syscall.SIGKILL)
	server.Wait(t, 5*time.Second)
	proctest.Eventually(t, 5*time.Second, "failed calls counted while the server is gone", func() bool { return calls("error") >= 5 })
	select {
	case <-client.Done():
		t.Fatalf("client exited while the server was gone:\n%s", client.Output())
	default:
	}

	okBefore := calls("ok")
	_, port, _ := net.SplitHostPort(grpcAddr)
	start(t, "server", serverEnv("SERVER_GRPC_PORT="+port)...)
	took := proctest.Eventually(t, 5*time.Second, "calls succeed again after the server returns", func() bool { return calls("ok") > okBefore+5 })
	t.Logf("calls succeeded again %v after the server restarted", took.Round(time.Millisecond))
}

// TestRestartInPlace restarts the server in place, as a process manager or
// an IDE's restart does (SIGTERM, wait for the exit, start the new binary on
// the same port), with the settings of infra/base, while a client calls it.
// The restart must not wait out pod-termination delays, and no call may fail:
// calls wait for the server within their deadline.
func TestRestartInPlace(t *testing.T) {
	// SERVER_SHUTDOWN_DELAY stays unset, as in infra/base: the pod's preStop
	// hook waits instead, and a restart in place never runs it.
	env := serverEnv("SERVER_SHUTDOWN_TIMEOUT=10s", "SERVER_MAX_CONNECTION_AGE=10s")
	server := start(t, "server", env...)
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	_, port, _ := net.SplitHostPort(grpcAddr)
	client := start(t, "client", clientEnv(grpcAddr, "CLIENT_RATE=100", "CLIENT_CONCURRENCY=4")...)
	clientMetrics := metricsURL(t, client)
	calls := func(result string) float64 {
		return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": result})
	}
	proctest.Eventually(t, 10*time.Second, "first successful calls", func() bool { return calls("ok") >= 20 })

	const restarts = 5
	var slowest time.Duration
	for range restarts {
		okBefore := calls("ok")
		began := time.Now()
		server.Signal(t, syscall.SIGTERM)
		if code, sig := server.Wait(t, 5*time.Second); code != 0 {
			t.Fatalf("server exit code %d (signal %v) after SIGTERM, want 0", code, sig)
		}
		if stopped := time.Since(began); stopped > time.Second {
			t.Errorf("server took %v to exit after SIGTERM, want under 1s: a restart must not wait", stopped.Round(time.Millisecond))
		}
		server = start(t, "server", append(env, "SERVER_GRPC_PORT="+port)...)
		took := proctest.Eventually(t, 5*time.Second, "calls succeed on the new process", func() bool { return calls("ok") > okBefore+50 })
		slowest = max(slowest, took)
	}
	if failed := calls("error"); failed != 0 {
		t.Errorf("%v calls failed across %d restarts in place, want 0", failed, restarts)
	}
	t.Logf("%d restarts in place, %v calls ok, 0 failed; calls resumed within %v", restarts, calls("ok"), slowest.Round(time.Millisecond))
}

// TestSecondSignalStopsAtOnce: the first SIGTERM starts a graceful shutdown
// (here held up by a long delay), a second one ends the process at once.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	server := start(t, "server", serverEnv("SERVER_SHUTDOWN_DELAY=1m")...)
	server.Addr(t, "grpc", startTimeout)
	server.Signal(t, syscall.SIGTERM)
	proctest.Eventually(t, 5*time.Second, "server logs that it waits", func() bool {
		return len(server.Events("shutdown_delay")) > 0
	})
	select {
	case <-server.Done():
		t.Fatal("server exited during its shutdown delay")
	case <-time.After(200 * time.Millisecond):
	}
	began := time.Now()
	server.Signal(t, syscall.SIGTERM)
	if code, sig := server.Wait(t, 2*time.Second); sig != syscall.SIGTERM {
		t.Errorf("after a second SIGTERM: exit code %d, signal %v, want ended by SIGTERM", code, sig)
	}
	t.Logf("second SIGTERM ended the server in %v", time.Since(began).Round(time.Millisecond))
}

// TestClientDuration: a client given CLIENT_DURATION calls for that long,
// then exits 0 by itself.
func TestClientDuration(t *testing.T) {
	server := start(t, "server", serverEnv()...)
	began := time.Now()
	client := start(t, "client", clientEnv(server.Addr(t, "grpc", startTimeout), "CLIENT_DURATION=1s")...)
	if code, sig := client.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("client exit code %d (signal %v), want 0", code, sig)
	}
	// About, not at least: on a loaded 2-vCPU VM the child's timer and this
	// clock were seen 2ms apart the wrong way (998ms).
	if took := time.Since(began); took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("client ran %v, want about CLIENT_DURATION (1s)", took.Round(time.Millisecond))
	}
	if len(client.Events("stopped")) == 0 {
		t.Errorf("client did not log its stop:\n%s", client.Output())
	}
}

// TestExitCodes: one run of the binaries for each exit code. --help prints
// the variables and exits 0; a configuration that cannot be used exits 2
// before anything starts, with exactly one line that names the variable
// and says what is wrong (each program's config test has every bad value,
// platform's TestStart the line for each kind); a failure once running,
// such as a port already taken, exits 1.
func TestExitCodes(t *testing.T) {
	taken, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	tests := []struct {
		name     string
		program  string
		args     []string
		env      []string
		wantCode int
		wantOut  string // the whole output for exit code 2, contained in it otherwise
	}{
		{name: "help", program: "server", args: []string{"--help"}, wantCode: 0, wantOut: "  SERVER_GRPC_PORT\n"},
		{name: "bad variable", program: "client", env: []string{"CLIENT_RATE=0"}, wantCode: 2,
			wantOut: "client: invalid configuration: CLIENT_RATE=0: must be above 0 and at most 100000 calls per second\n"},
		{name: "outside a cluster", program: "client", env: []string{"CLIENT_SERVER_ADDR=kubernetes:///server-service.echo:grpc", "CLIENT_METRICS_PORT=0"}, wantCode: 1,
			wantOut: "CLIENT_SERVER_ADDR=kubernetes:///server-service.echo:grpc: the Kubernetes API is not reachable from here"},
		{name: "port taken", program: "server", env: []string{"SERVER_GRPC_PORT=" + port, "SERVER_METRICS_PORT=0"}, wantCode: 1,
			wantOut: `"error":"listen for grpc: listen tcp :` + port + `: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A program that should have exited but runs on is stopped.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, tt.program), tt.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tt.env...)
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != tt.wantCode {
				t.Errorf("exit code %d, want %d; output:\n%s", got, tt.wantCode, out)
			}
			if tt.wantCode != 2 && !strings.Contains(string(out), tt.wantOut) || tt.wantCode == 2 && string(out) != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
		})
	}
}
