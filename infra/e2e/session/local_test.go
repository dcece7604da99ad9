//go:build e2e

package session

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
	"example.com/grpc-metrics/infra/proctest"
)

// --local server under a real Tilt: the server runs on this machine under
// scripts/hostrun, and the cluster's calls reach it through EndpointSlices
// that name this machine.

// targetUp is a poll condition: Prometheus has the target instance of job
// up.
func targetUp(ctx context.Context, papi promv1.API, job, instance string) (bool, string) {
	targets, err := papi.Targets(ctx)
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	for _, tg := range targets.Active {
		if string(tg.Labels["job"]) != job {
			continue
		}
		seen = append(seen, fmt.Sprintf("%s %s", tg.Labels["instance"], tg.Health))
		if string(tg.Labels["instance"]) == instance && tg.Health == promv1.HealthGood {
			return true, ""
		}
	}
	return false, fmt.Sprintf("the %s job's targets: %v", job, seen)
}

// TestLocalServer: --local server while the client calls at E2E_RATE. The
// switch, the client's calls on the local process, Prometheus's target,
// a trace across the pod and this machine, five edits timed as a person
// and as the in-cluster client see them, and the switch back.
func TestLocalServer(t *testing.T) {
	s := startTilt(t, 1, suite.Rate)
	podBefore := suite.Cluster.MustPods(t, s.Target.Namespace, "server", true, 1)[0].Name
	address := s.switchToLocalServer(t)
	t.Run("the in-cluster client calls the local process", s.localServerCalled)
	t.Run("Prometheus has the local target up", func(t *testing.T) { s.localTargetUp(t, address) })
	t.Run("a trace spans the client's pod and the local server", s.localTrace)
	var localP50 time.Duration
	t.Run("five edits", func(t *testing.T) { localP50 = s.localEdits(t) })
	s.RestoreLocalServer(t)
	s.switchBackFromLocal(t, podBefore)
	t.Run("under Delve on this machine, a breakpoint stops the in-cluster client's calls", func(t *testing.T) {
		file, line := s.localServerUnderDelve(t)
		s.localDebugEdits(t, file, line, localP50)
		s.SetOptions(t)
		for _, app := range []string{"server", "client"} {
			if err := suite.Cluster.WaitRollout(t.Context(), s.Target.Namespace, app, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// switchToLocalServer switches to --local server with tilt args: hostrun's
// slices replace the server pod, and the client's calls reach this machine,
// none failing. It returns the address the pods reach this machine at.
func (s *session) switchToLocalServer(t *testing.T) string {
	t.Helper()
	ns := s.Target.Namespace
	var address string
	failed, took := s.SwitchMode(t, "--local server: hostrun's slices, no server pod, the client's calls on this machine", func(ctx context.Context) (bool, string) {
		a, why := tiltsession.HostrunAddress(ctx, suite.Cluster, ns)
		if a == "" {
			return false, why
		}
		address = a
		if pods, err := suite.Cluster.RunningPods(ctx, ns, "server"); err != nil || len(pods) > 0 {
			return false, fmt.Sprintf("server pods still running: %d (%v)", len(pods), err)
		}
		mfs, err := proctest.Scrape(s.LocalMetrics())
		if err != nil {
			return false, err.Error()
		}
		return echo.Answered(mfs) > 0, "the local server has answered no call yet"
	}, "--local", "server")
	t.Logf("--local server: switched in %v, the pods reach this machine at %s; %v client calls failed at %d/s", took.Round(100*time.Millisecond), address, failed, s.Rate)
	if failed > 0 {
		t.Errorf("%v client calls failed at the switch to --local server, want 0", failed)
	}
	return address
}

// localServerCalled checks that the in-cluster client's calls reach the
// local process, and that the server's Deployment is gone and its Services
// kept.
func (s *session) localServerCalled(t *testing.T) {
	ctx, ns := t.Context(), s.Target.Namespace
	count := func() float64 {
		mfs, err := proctest.Scrape(s.LocalMetrics())
		if err != nil {
			t.Fatal(err)
		}
		return proctest.Value(mfs, "echo_requests_total", map[string]string{"api": "echo", "result": "ok"})
	}
	before := count()
	time.Sleep(3 * time.Second)
	got := count() - before
	if got < float64(s.Rate) {
		t.Errorf("the local server answered %v calls in 3s, want at least %d of the client's %d/s", got, s.Rate, s.Rate)
	}
	t.Logf("the local server answered %v calls in 3s", got)
	if pods, err := suite.Cluster.RunningPods(ctx, ns, "server"); err != nil || len(pods) != 0 {
		t.Errorf("%d server pods in the cluster with --local server (%v), want 0", len(pods), err)
	}
	if _, err := suite.Cluster.Client.AppsV1().Deployments(ns).Get(ctx, "server", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the server Deployment with --local server: %v, want not found", err)
	}
	for _, svc := range []string{"server-service", "server-metrics-service"} {
		got, err := suite.Cluster.Client.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
		if err != nil || got.Spec.Selector["app"] != "server" {
			t.Errorf("Service %s: %v, selector %v: want it kept, with its selector", svc, err, got.Spec.Selector)
		}
	}
}

// localTargetUp waits until Prometheus has the local server's target at
// address up.
func (s *session) localTargetUp(t *testing.T, address string) {
	ctx, ns := t.Context(), s.Target.Namespace
	papi := echo.PrometheusAt(t, suite.Cluster, ns, suite.Cluster.MustPods(t, ns, "prometheus", true, 0)[0].Name)
	err := kube.Poll(ctx, 2*time.Minute, "up{job=\"server\"} == 1 for "+address, func(ctx context.Context) (bool, string) {
		return targetUp(ctx, papi, "server", address+":9000")
	})
	if err != nil {
		t.Fatal(err)
	}
}

// localTrace waits for a trace of a call from a client pod answered by the
// local server.
func (s *session) localTrace(t *testing.T) {
	ctx, ns := t.Context(), s.Target.Namespace
	jaeger := "http://" + suite.Cluster.PortForward(t, ns, suite.Cluster.MustPods(t, ns, "jaeger", true, 0)[0].Name, 16686)
	since := time.Now()
	var found string
	err := kube.Poll(ctx, time.Minute, "a trace of a client pod's call answered by server-local", func(ctx context.Context) (bool, string) {
		var got echo.Traces
		if err := echo.GetJSON(ctx, fmt.Sprintf("%s/api/traces?service=server&limit=20&start=%d", jaeger, since.UnixMicro()), &got); err != nil {
			return false, err.Error()
		}
		for _, tr := range got.Data {
			if tr.ClientAndServer() && tr.PodOf("server") == "server-local" && strings.HasPrefix(tr.PodOf("client"), "client-") {
				found = tr.TraceID
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d traces, none from a client pod to server-local", len(got.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trace %s: the client pod's span and server-local's span, its child", found)
}

// localEdits makes five edits of the local server, timed as a person and as
// the in-cluster client see them, and returns the median as a person sees
// it.
func (s *session) localEdits(t *testing.T) time.Duration {
	var user, cluster []time.Duration
	_, failed0 := s.Calls.Read(t)
	for range 5 {
		r := s.EditLocal(t)
		user, cluster = append(user, r.User), append(cluster, r.Total)
		t.Logf("local edit %d: through %s %.2fs (watch %.2fs, compile %.2fs as Tilt records it, %d polls failed); the in-cluster client's next call on the new process %.2fs",
			s.Edits, s.Target.Local(20000), r.User.Seconds(), r.Detect.Seconds(), r.Compile.Seconds(), r.Refused, r.Total.Seconds())
	}
	_, failed1 := s.Calls.Read(t)
	t.Logf("5 local edits: through localhost p50 %.2fs, max %.2fs; the in-cluster client p50 %.2fs; %v client calls failed",
		tiltsession.Median(user).Seconds(), slices.Max(user).Seconds(), tiltsession.Median(cluster).Seconds(), failed1-failed0)
	if failed1 > failed0 {
		t.Errorf("%v client calls failed during the local edits, want 0 (each build takes over the sockets)", failed1-failed0)
	}
	return tiltsession.Median(user)
}

// switchBackFromLocal switches the server back into the cluster with tilt
// args: a new server pod (not podBefore), no hostrun slice, Tilt's forward
// of localhost:20000 again, and no client call failing.
func (s *session) switchBackFromLocal(t *testing.T, podBefore string) {
	t.Helper()
	ctx, ns := t.Context(), s.Target.Namespace
	failed, took := s.SwitchMode(t, "back in the cluster: a ready server pod, no hostrun slice", func(ctx context.Context) (bool, string) {
		if err := suite.Cluster.WaitRollout(ctx, ns, "server", time.Second); err != nil {
			return false, err.Error()
		}
		return tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns)
	})
	t.Logf("back in the cluster in %v; %v client calls failed", took.Round(100*time.Millisecond), failed)
	// Tilt's forward of localhost:20000 binds once the local process has
	// let go of it.
	began := time.Now()
	if err := kube.Poll(ctx, 20*time.Second, "a call through Tilt's forward of "+s.Target.Local(20000), func(context.Context) (bool, string) {
		_, err := s.UserCall("user")
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Error(err)
	}
	t.Logf("localhost:20000 answered through Tilt's forward %v after the switch back had settled", time.Since(began).Round(10*time.Millisecond))
	if failed > 0 {
		t.Errorf("%v client calls failed at the switch back, want 0", failed)
	}
	pods := suite.Cluster.MustPods(t, ns, "server", true, 1)
	if pods[0].Name == podBefore {
		t.Errorf("the server pod %s is the one from before --local", pods[0].Name)
	}
	s.Probes["server"] = echo.NewProbes(t, suite.Cluster, ns, "server")
	_, failed0 := s.Calls.Read(t)
	time.Sleep(3 * time.Second)
	if _, failed1 := s.Calls.Read(t); failed1 > failed0 {
		t.Errorf("%v client calls failed after the switch back settled", failed1-failed0)
	}
}

// localServerUnderDelve switches to --local server --debug server with tilt
// args, waits until Delve runs the local server's debug build and checks
// that a breakpoint stops an in-cluster call. It returns the file and line
// of the breakpoint an IDE sends.
func (s *session) localServerUnderDelve(t *testing.T) (string, int) {
	t.Helper()
	ctx, ns := t.Context(), s.Target.Namespace
	// The in-cluster client's deadline grows for a debugged server: it
	// rolls out.
	s.SetOptions(t, "--local", "server", "--debug", "server")
	if err := kube.Poll(ctx, 3*time.Minute, "the local server's debug build under Delve, answering the client", func(ctx context.Context) (bool, string) {
		// hostrun starts the last build at once under Delve (without
		// debug information if it is the optimized one), and the debug
		// build once it is compiled (waitDebugBuild).
		conn, err := net.DialTimeout("tcp", serverDelve, time.Second)
		if err != nil {
			return false, "Delve: " + err.Error()
		}
		conn.Close()
		if a, why := tiltsession.HostrunAddress(ctx, suite.Cluster, ns); a == "" {
			return false, why
		}
		mfs, err := proctest.Scrape(s.LocalMetrics())
		if err != nil {
			return false, err.Error()
		}
		return echo.Answered(mfs) > 0, "no call answered yet"
	}); err != nil {
		t.Fatal(err)
	}
	if err := suite.Cluster.WaitRollout(ctx, ns, "client", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	s.Calls = echo.NewCallCounter(t, suite.Cluster, ns)
	file, line := breakpointLocation(t, s.Dir)
	waitDebugBuild(t, serverDelve, file, line)
	inClusterCallStops(t, file, line)
	return file, line
}

// localDebugEdits times edits of the local server under Delve, with and
// without a debugger at file:line, against localP50, the local default
// loop's median.
func (s *session) localDebugEdits(t *testing.T, file string, line int, localP50 time.Duration) {
	t.Helper()
	// Edits timed with no debugger attached, then three with one
	// attached once, as in the cluster, and a terminal polling the
	// program's sockets on this machine all along.
	rss0 := localDelveRSS(t, s.Dir)
	poll := new(proctest.Poller)
	pctx, stopPoll := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { poll.Run(pctx, 100*time.Millisecond, s.Target.Local(20000), s.Target.Local(9000)) })
	_, failed0 := s.Calls.Read(t)
	var user []time.Duration
	for i := range 5 {
		r := s.EditLocal(t)
		user = append(user, r.User)
		t.Logf("local debug edit %d: through %s %.2fs (compile %.2fs as Tilt records it)", i+1, s.Target.Local(20000), r.User.Seconds(), r.Compile.Seconds())
	}
	api := attachAPI(t, file, line)
	for i := range attachedEdits + 1 {
		api.stopsACall(t, fmt.Sprintf("under the local Delve, after %d edits with it attached", i))
		if i < attachedEdits {
			s.EditLocal(t)
		}
	}
	api.detach(t)
	stopPoll()
	wg.Wait()
	_, failed1 := s.Calls.Read(t)
	rss1 := localDelveRSS(t, s.Dir)
	ratio := tiltsession.Median(user).Seconds() / localP50.Seconds()
	t.Logf("%d local debug edits: p50 %.2fs, %.2f times the local default's %.2fs; then %d with a debugger attached through them; %d connections to the sockets ok, %d failed; %v in-cluster calls failed; Delve's memory %d MiB, then %d MiB",
		len(user), tiltsession.Median(user).Seconds(), ratio, localP50.Seconds(), attachedEdits, poll.OK(), poll.Failed(), failed1-failed0, rss0>>20, rss1>>20)
	if n := poll.Failed(); n > 0 || poll.OK() == 0 {
		t.Errorf("%d of %d connections to localhost:20000 and :9000 failed across the local debug edits, want 0:\n%s", n, n+poll.OK(), strings.Join(poll.Failures(), "\n"))
	}
	if failed1 > failed0 {
		t.Errorf("%v in-cluster client calls failed across the local debug edits, want 0", failed1-failed0)
	}
	if grew := rss1 - rss0; grew > 60<<20 {
		t.Errorf("the local Delve's memory grew %d MiB over %d edits, want at most 60", grew>>20, len(user)+attachedEdits)
	}
}

// TestLocalClient: --local client. The client runs on this machine and
// calls the server pod through Tilt's forward; Prometheus scrapes it here;
// back in the cluster, its Deployment is restored.
func TestLocalClient(t *testing.T) {
	s := startTilt(t, 1, suite.Rate)
	ctx := t.Context()
	ns := s.Target.Namespace
	local := "http://" + s.Target.Local(9001) + "/metrics"
	s.SetOptions(t, "--local", "client")
	var address string
	if err := kube.Poll(ctx, 3*time.Minute, "--local client: no client pod, hostrun's slice, calls answered", func(ctx context.Context) (bool, string) {
		if pods, err := suite.Cluster.RunningPods(ctx, ns, "client"); err != nil || len(pods) > 0 {
			return false, fmt.Sprintf("client pods still running: %d (%v)", len(pods), err)
		}
		list, err := tiltsession.HostrunSlices(ctx, suite.Cluster, ns)
		if err != nil || len(list.Items) != 1 || list.Items[0].Labels[discoveryv1.LabelServiceName] != "client-metrics-service" || len(list.Items[0].Endpoints) != 1 {
			return false, fmt.Sprintf("hostrun's slices: %d (%v)", len(list.Items), err)
		}
		address = list.Items[0].Endpoints[0].Addresses[0]
		mfs, err := proctest.Scrape(local)
		if err != nil {
			return false, err.Error()
		}
		ok, _ := echo.ClientCalls(mfs)
		return ok >= 10, "fewer than 10 calls answered"
	}); err != nil {
		t.Fatal(err)
	}
	papi := echo.PrometheusAt(t, suite.Cluster, ns, suite.Cluster.MustPods(t, ns, "prometheus", true, 0)[0].Name)
	if err := kube.Poll(ctx, 2*time.Minute, "up{job=\"client\"} == 1 for "+address+":9001", func(ctx context.Context) (bool, string) {
		return targetUp(ctx, papi, "client", address+":9001")
	}); err != nil {
		t.Fatal(err)
	}
	mfs, err := proctest.Scrape(local)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := echo.ClientCalls(mfs)
	t.Logf("--local client: %v calls answered, %v failed, through %s to the server pod; Prometheus scrapes it at %s:9001", ok, failed, s.Target.Local(20000), address)
	if failed > 0 {
		t.Errorf("the local client's calls: %v failed", failed)
	}

	s.SetOptions(t)
	if err := kube.Poll(ctx, 3*time.Minute, "the client back in the cluster, no hostrun slice", func(ctx context.Context) (bool, string) {
		if err := suite.Cluster.WaitRollout(ctx, ns, "client", time.Second); err != nil {
			return false, err.Error()
		}
		return tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns)
	}); err != nil {
		t.Fatal(err)
	}
	calls := echo.NewCallCounter(t, suite.Cluster, ns)
	ok0, _ := calls.Read(t)
	if err := kube.Poll(ctx, 10*time.Second, "a successful call of the client pod", func(context.Context) (bool, string) {
		ok, _ := calls.Read(t)
		if ok < ok0 {
			// The compile for the cluster, run again by the switch, was
			// live-updated: the new process counts from 0.
			ok0 = 0
		}
		return ok > ok0, fmt.Sprintf("%v successful calls", ok)
	}); err != nil {
		t.Errorf("the client pod back in the cluster: %v", err)
	}
}
