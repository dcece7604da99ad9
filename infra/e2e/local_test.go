//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	dto "github.com/prometheus/client_model/go"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/proctest"
)

// --local server under a real Tilt: the server runs on this machine under
// scripts/hostrun, and the cluster's calls reach it through EndpointSlices
// that name this machine.

// hostrunSlice is the label of the slices scripts/hostrun makes.
const hostrunSlice = "endpointslice.kubernetes.io/managed-by=hostrun.grpc-metrics.example.com"

// localMetrics is the local server's /metrics: it listens where the
// forward would be.
func (s *tiltSession) localMetrics() string { return "http://" + s.target.local(9000) + "/metrics" }

// switchMode changes the session's options with tilt args, as a person does
// while Tilt runs (the session's own options, then extra), and returns
// the client's calls that failed from the switch until ready reports the
// switch done and the calls have settled.
func (s *tiltSession) switchMode(t *testing.T, what string, ready func(context.Context) (bool, string), extra ...string) (failed float64, took time.Duration) {
	t.Helper()
	_, failed0 := s.calls.read(t)
	began := time.Now()
	s.setOptions(t, extra...)
	if err := poll(t.Context(), 3*time.Minute, what, ready); err != nil {
		t.Fatal(err)
	}
	took = time.Since(began)
	time.Sleep(2 * settle)
	_, failed1 := s.calls.read(t)
	return failed1 - failed0, took
}

// hostrunSlices lists the slices of scripts/hostrun in ns.
func hostrunSlices(ctx context.Context, ns string) (*discoveryv1.EndpointSliceList, error) {
	return suite.c.client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: hostrunSlice})
}

// noHostrunSlice is a poll condition: scripts/hostrun has withdrawn its
// slices from ns.
func noHostrunSlice(ctx context.Context, ns string) (bool, string) {
	list, err := hostrunSlices(ctx, ns)
	if err != nil {
		return false, err.Error()
	}
	return len(list.Items) == 0, fmt.Sprintf("hostrun's slices: %d", len(list.Items))
}

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

// hostrunAddress is the address the slices of scripts/hostrun name, once
// both Services have one.
func hostrunAddress(ctx context.Context, ns string) (string, string) {
	list, err := hostrunSlices(ctx, ns)
	if err != nil {
		return "", err.Error()
	}
	services := map[string]string{}
	for _, sl := range list.Items {
		for _, e := range sl.Endpoints {
			if len(e.Addresses) > 0 && e.Conditions.Ready != nil && *e.Conditions.Ready {
				services[sl.Labels[discoveryv1.LabelServiceName]] = e.Addresses[0]
			}
		}
	}
	if len(services) != 2 || services["server-service"] == "" || services["server-service"] != services["server-metrics-service"] {
		return "", fmt.Sprintf("hostrun's slices: %v", services)
	}
	return services["server-service"], ""
}

// TestLocalServer: --local server while the client calls at E2E_RATE. The
// switch, the client's calls on the local process, Prometheus's target,
// a trace across the pod and this machine, five edits timed as a person
// and as the in-cluster client see them, and the switch back.
func TestLocalServer(t *testing.T) {
	s := startTilt(t, 1, suite.rate)
	ctx := t.Context()
	ns := s.target.ns
	podsBefore := mustPods(t, ns, "server", true, 1)

	var address string
	failed, took := s.switchMode(t, "--local server: hostrun's slices, no server pod, the client's calls on this machine", func(ctx context.Context) (bool, string) {
		a, why := hostrunAddress(ctx, ns)
		if a == "" {
			return false, why
		}
		address = a
		if pods, err := suite.c.runningPodsIn(ctx, ns, "server"); err != nil || len(pods) > 0 {
			return false, fmt.Sprintf("server pods still running: %d (%v)", len(pods), err)
		}
		mfs, err := proctest.Scrape(s.localMetrics())
		if err != nil {
			return false, err.Error()
		}
		return answered(mfs) > 0, "the local server has answered no call yet"
	}, "--local", "server")
	t.Logf("--local server: switched in %v, the pods reach this machine at %s; %v client calls failed at %d/s", took.Round(100*time.Millisecond), address, failed, s.rate)
	if failed > 0 {
		t.Errorf("%v client calls failed at the switch to --local server, want 0", failed)
	}

	t.Run("the in-cluster client calls the local process", func(t *testing.T) {
		count := func() float64 {
			mfs, err := proctest.Scrape(s.localMetrics())
			if err != nil {
				t.Fatal(err)
			}
			return proctest.Value(mfs, "echo_requests_total", map[string]string{"api": "echo", "result": "ok"})
		}
		before := count()
		time.Sleep(3 * time.Second)
		got := count() - before
		if got < float64(s.rate) {
			t.Errorf("the local server answered %v calls in 3s, want at least %d of the client's %d/s", got, s.rate, s.rate)
		}
		t.Logf("the local server answered %v calls in 3s", got)
		if pods, err := suite.c.runningPodsIn(ctx, ns, "server"); err != nil || len(pods) != 0 {
			t.Errorf("%d server pods in the cluster with --local server (%v), want 0", len(pods), err)
		}
		if _, err := suite.c.client.AppsV1().Deployments(ns).Get(ctx, "server", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the server Deployment with --local server: %v, want not found", err)
		}
		for _, svc := range []string{"server-service", "server-metrics-service"} {
			got, err := suite.c.client.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
			if err != nil || got.Spec.Selector["app"] != "server" {
				t.Errorf("Service %s: %v, selector %v: want it kept, with its selector", svc, err, got.Spec.Selector)
			}
		}
	})

	t.Run("Prometheus has the local target up", func(t *testing.T) {
		papi := prometheusAt(t, ns, mustPods(t, ns, "prometheus", true, 0)[0].Name)
		err := poll(ctx, 2*time.Minute, "up{job=\"server\"} == 1 for "+address, func(ctx context.Context) (bool, string) {
			return targetUp(ctx, papi, "server", address+":9000")
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a trace spans the client's pod and the local server", func(t *testing.T) {
		jaeger := "http://" + suite.c.portForwardIn(t, ns, mustPods(t, ns, "jaeger", true, 0)[0].Name, 16686)
		since := time.Now()
		var found string
		err := poll(ctx, time.Minute, "a trace of a client pod's call answered by server-local", func(ctx context.Context) (bool, string) {
			var got jaegerTraces
			if err := getJSON(ctx, fmt.Sprintf("%s/api/traces?service=server&limit=20&start=%d", jaeger, since.UnixMicro()), &got); err != nil {
				return false, err.Error()
			}
			for _, tr := range got.Data {
				if tr.clientAndServer() && tr.podOf("server") == "server-local" && strings.HasPrefix(tr.podOf("client"), "client-") {
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
	})

	var localP50 time.Duration
	t.Run("five edits", func(t *testing.T) {
		var user, cluster []time.Duration
		_, failed0 := s.calls.read(t)
		for range 5 {
			r := s.editLocal(t)
			user, cluster = append(user, r.user), append(cluster, r.total)
			t.Logf("local edit %d: through %s %.2fs (watch %.2fs, compile %.2fs as Tilt records it, %d polls failed); the in-cluster client's next call on the new process %.2fs",
				s.edits, s.target.local(20000), r.user.Seconds(), r.detect.Seconds(), r.compile.Seconds(), r.refused, r.total.Seconds())
		}
		_, failed1 := s.calls.read(t)
		localP50 = median(user)
		t.Logf("5 local edits: through localhost p50 %.2fs, max %.2fs; the in-cluster client p50 %.2fs; %v client calls failed",
			median(user).Seconds(), slices.Max(user).Seconds(), median(cluster).Seconds(), failed1-failed0)
		if failed1 > failed0 {
			t.Errorf("%v client calls failed during the local edits, want 0 (each build takes over the sockets)", failed1-failed0)
		}
	})
	s.restoreLocalServer(t)

	failed, took = s.switchMode(t, "back in the cluster: a ready server pod, no hostrun slice", func(ctx context.Context) (bool, string) {
		if err := suite.c.waitRolloutIn(ctx, ns, "server", time.Second); err != nil {
			return false, err.Error()
		}
		return noHostrunSlice(ctx, ns)
	})
	t.Logf("back in the cluster in %v; %v client calls failed", took.Round(100*time.Millisecond), failed)
	// Tilt's forward of localhost:20000 binds once the local process has
	// let go of it.
	began := time.Now()
	if err := poll(ctx, 20*time.Second, "a call through Tilt's forward of "+s.target.local(20000), func(context.Context) (bool, string) {
		_, err := s.userCall("user")
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Error(err)
	}
	t.Logf("localhost:20000 answered through Tilt's forward %v after the switch back had settled", time.Since(began).Round(10*time.Millisecond))
	if failed > 0 {
		t.Errorf("%v client calls failed at the switch back, want 0", failed)
	}
	pods := mustPods(t, ns, "server", true, 1)
	if pods[0].Name == podsBefore[0].Name {
		t.Errorf("the server pod %s is the one from before --local", pods[0].Name)
	}
	s.probes["server"] = newProbes(t, ns, "server")
	_, failed0 := s.calls.read(t)
	time.Sleep(3 * time.Second)
	if _, failed1 := s.calls.read(t); failed1 > failed0 {
		t.Errorf("%v client calls failed after the switch back settled", failed1-failed0)
	}

	t.Run("under Delve on this machine, a breakpoint stops the in-cluster client's calls", func(t *testing.T) {
		// The in-cluster client's deadline grows for a debugged server: it
		// rolls out.
		s.setOptions(t, "--local", "server", "--debug", "server")
		if err := poll(ctx, 3*time.Minute, "the local server's debug build under Delve, answering the client", func(ctx context.Context) (bool, string) {
			// hostrun starts the last build at once under Delve (without
			// debug information if it is the optimized one), and the debug
			// build once it is compiled (waitDebugBuild).
			conn, err := net.DialTimeout("tcp", serverDelve, time.Second)
			if err != nil {
				return false, "Delve: " + err.Error()
			}
			conn.Close()
			if a, why := hostrunAddress(ctx, ns); a == "" {
				return false, why
			}
			mfs, err := proctest.Scrape(s.localMetrics())
			if err != nil {
				return false, err.Error()
			}
			return answered(mfs) > 0, "no call answered yet"
		}); err != nil {
			t.Fatal(err)
		}
		if err := suite.c.waitRolloutIn(ctx, ns, "client", 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		s.calls = newCallCounter(t, ns)
		file, line := breakpointLocation(t, s.dir)
		waitDebugBuild(t, serverDelve, file, line)
		inClusterCallStops(t, file, line)

		// Edits timed with no debugger attached, then three with one
		// attached once, as in the cluster, and a terminal polling the
		// program's sockets on this machine all along.
		rss0 := localDelveRSS(t, s.dir)
		poll := new(proctest.Poller)
		pctx, stopPoll := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { poll.Run(pctx, 100*time.Millisecond, s.target.local(20000), s.target.local(9000)) })
		_, failed0 := s.calls.read(t)
		var user []time.Duration
		for i := range 5 {
			r := s.editLocal(t)
			user = append(user, r.user)
			t.Logf("local debug edit %d: through %s %.2fs (compile %.2fs as Tilt records it)", i+1, s.target.local(20000), r.user.Seconds(), r.compile.Seconds())
		}
		api := attachAPI(t, file, line)
		for i := range attachedEdits + 1 {
			api.stopsACall(t, fmt.Sprintf("under the local Delve, after %d edits with it attached", i))
			if i < attachedEdits {
				s.editLocal(t)
			}
		}
		api.detach(t)
		stopPoll()
		wg.Wait()
		_, failed1 := s.calls.read(t)
		rss1 := localDelveRSS(t, s.dir)
		ratio := median(user).Seconds() / localP50.Seconds()
		t.Logf("%d local debug edits: p50 %.2fs, %.2f times the local default's %.2fs; then %d with a debugger attached through them; %d connections to the sockets ok, %d failed; %v in-cluster calls failed; Delve's memory %d MiB, then %d MiB",
			len(user), median(user).Seconds(), ratio, localP50.Seconds(), attachedEdits, poll.OK(), poll.Failed(), failed1-failed0, rss0>>20, rss1>>20)
		if n := poll.Failed(); n > 0 || poll.OK() == 0 {
			t.Errorf("%d of %d connections to localhost:20000 and :9000 failed across the local debug edits, want 0:\n%s", n, n+poll.OK(), strings.Join(poll.Failures(), "\n"))
		}
		if failed1 > failed0 {
			t.Errorf("%v in-cluster client calls failed across the local debug edits, want 0", failed1-failed0)
		}
		if grew := rss1 - rss0; grew > 60<<20 {
			t.Errorf("the local Delve's memory grew %d MiB over %d edits, want at most 60", grew>>20, len(user)+attachedEdits)
		}
		s.setOptions(t)
		for _, app := range []string{"server", "client"} {
			if err := suite.c.waitRolloutIn(ctx, ns, app, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
	})

}

// localDelveRSS is the resident memory, in bytes, of the Delve that hostrun
// runs on this machine for the session in dir.
func localDelveRSS(t *testing.T, dir string) int64 {
	t.Helper()
	pid := processIn(t, dir, filepath.Join("build", "local", "dlv")+"\x00")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// processIn is the id of a process of this machine whose command line
// starts with argv (NUL-separated) and whose working directory is dir.
func processIn(t *testing.T, dir, argv string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(cmd, []byte(argv)) {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join(filepath.Dir(p), "cwd")); err == nil && cwd == dir {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no process %q runs here for %s", strings.ReplaceAll(argv, "\x00", " "), dir)
	return 0
}

// podOf is the k8s.pod.name of the process of the first span of service.
func (tr jaegerTrace) podOf(service string) string {
	for _, p := range tr.Processes {
		if p.ServiceName != service {
			continue
		}
		for _, tag := range p.Tags {
			if tag.Key == "k8s.pod.name" {
				return fmt.Sprint(tag.Value)
			}
		}
	}
	return ""
}

// editLocal makes one edit of the server run by --local and times it: to
// a call through localhost:20000 that the new build answers (user), and to
// the in-cluster client's first call answered by the new process (total:
// the process's own counter passes the calls made through localhost).
func (s *tiltSession) editLocal(t testing.TB) editResult {
	t.Helper()
	s.edits++
	want := fmt.Sprintf("user (edit %d)", s.edits)
	if _, err := s.userCall("user"); err != nil {
		t.Fatalf("a call through %s before edit %d: %v", s.target.local(20000), s.edits, err)
	}
	var r editResult
	began := time.Now()
	rev := s.commitAndWrite(t, editedFile["server"], editReply(t, s.serverSource, s.edits))
	r.user, r.refused = firstAnswer(t, fmt.Sprintf("local edit %d (revision %.8s) through %s", s.edits, rev, s.target.local(20000)), began,
		func() bool { return localRevision(s.localMetrics()) == rev },
		func() (string, error) { return s.userCall("user") }, want)
	// The new process counts the calls through localhost that it answered
	// (at least the one above); one more is the in-cluster client's.
	for {
		mfs, err := proctest.Scrape(s.localMetrics())
		if err == nil && revisionOf(mfs, "server") == rev && answered(mfs) > float64(1+r.refused) {
			r.total = time.Since(began)
			break
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("local edit %d: the in-cluster client's calls did not reach the new process within %v", s.edits, editTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// Tilt records the compile's end a moment after its command exits,
	// which may be after the new process serves.
	for range 40 {
		if compile, ok := s.buildAfter(t, "server-compile", began); ok {
			r.detect, r.compile = compile.Start.Sub(began), compile.Finish.Sub(compile.Start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// revisionOf is the revision in program's echo_<program>_build_info.
func revisionOf(mfs map[string]*dto.MetricFamily, program string) string {
	for _, m := range mfs["echo_"+program+"_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "revision" {
				return l.GetValue()
			}
		}
	}
	return ""
}

// localRevision is the revision that the local server's process reports.
func localRevision(url string) string {
	mfs, err := proctest.Scrape(url)
	if err != nil {
		return ""
	}
	return revisionOf(mfs, "server")
}

// restoreLocalServer puts the server's code back after local edits.
func (s *tiltSession) restoreLocalServer(t *testing.T) {
	t.Helper()
	path := filepath.Join(s.dir, editedFile["server"])
	if current, err := os.ReadFile(path); err != nil || string(current) == string(s.serverSource) {
		return
	}
	rev := s.commitAndWrite(t, editedFile["server"], s.serverSource)
	if err := poll(t.Context(), editTimeout, "the local server back on its own code", func(context.Context) (bool, string) {
		return localRevision(s.localMetrics()) == rev, ""
	}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLoopModes times the server's edit loop in the cluster and with
// --local server, alternating in one Tilt session with the client calling at
// E2E_RATE: each iteration is a round of 3 edits in the cluster, a switch to
// --local server, 3 edits there and the switch back. Each edit is timed from
// the save to a call through localhost:20000 that the new build answers.
// Run it with scripts/bench --loop-local.
func BenchmarkLoopModes(b *testing.B) {
	s := startTilt(b, 1, suite.rate)
	ns := s.target.ns
	var cluster, local []time.Duration
	var failed float64
	wait := func(what string, cond func(context.Context) (bool, string)) {
		if err := poll(b.Context(), 3*time.Minute, what, cond); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		_, failed0 := s.calls.read(b)
		for range 3 {
			r := s.edit(b, "server")
			cluster = append(cluster, r.user)
			b.Logf("in the cluster: %.2fs (compile %.2fs, sync %.2fs)", r.user.Seconds(), r.compile.Seconds(), r.sync.Seconds())
		}
		s.setOptions(b, "--local", "server")
		wait("--local server serving the client", func(ctx context.Context) (bool, string) {
			if a, why := hostrunAddress(ctx, ns); a == "" {
				return false, why
			}
			pods, err := suite.c.runningPodsIn(ctx, ns, "server")
			return err == nil && len(pods) == 0, fmt.Sprintf("%d server pods", len(pods))
		})
		for range 3 {
			r := s.editLocal(b)
			local = append(local, r.user)
			b.Logf("on this machine: %.2fs (watch %.2fs, compile %.2fs)", r.user.Seconds(), r.detect.Seconds(), r.compile.Seconds())
		}
		s.setOptions(b)
		wait("the server back in the cluster", func(ctx context.Context) (bool, string) {
			if err := suite.c.waitRolloutIn(ctx, ns, "server", time.Second); err != nil {
				return false, err.Error()
			}
			return noHostrunSlice(ctx, ns)
		})
		// The local process lets go of localhost:20000 a moment after its
		// slices go; Tilt's forward to the pod binds it on its next retry.
		time.Sleep(time.Second)
		wait("Tilt's forward of localhost:20000 to the pod", func(context.Context) (bool, string) {
			_, err := s.userCall("user")
			return err == nil, fmt.Sprint(err)
		})
		s.probes["server"] = newProbes(b, ns, "server")
		time.Sleep(settle)
		_, failed1 := s.calls.read(b)
		failed += failed1 - failed0
	}
	pc, pl := median(cluster), median(local)
	b.Logf("save to new code through localhost:20000, %d edits each: in the cluster p50 %.2fs (%.2f-%.2f), on this machine p50 %.2fs (%.2f-%.2f): %.2fx; %v client calls failed, switches included",
		len(cluster), pc.Seconds(), slices.Min(cluster).Seconds(), slices.Max(cluster).Seconds(),
		pl.Seconds(), slices.Min(local).Seconds(), slices.Max(local).Seconds(), pl.Seconds()/pc.Seconds(), failed)
	b.ReportMetric(pc.Seconds(), "cluster-p50-s")
	b.ReportMetric(pl.Seconds(), "local-p50-s")
	b.ReportMetric(pl.Seconds()/pc.Seconds(), "local/cluster")
	b.ReportMetric(failed, "failed-calls")
}

// TestLocalClient: --local client. The client runs on this machine and
// calls the server pod through Tilt's forward; Prometheus scrapes it here;
// back in the cluster, its Deployment is restored.
func TestLocalClient(t *testing.T) {
	s := startTilt(t, 1, suite.rate)
	ctx := t.Context()
	ns := s.target.ns
	local := "http://" + s.target.local(9001) + "/metrics"
	s.setOptions(t, "--local", "client")
	var address string
	if err := poll(ctx, 3*time.Minute, "--local client: no client pod, hostrun's slice, calls answered", func(ctx context.Context) (bool, string) {
		if pods, err := suite.c.runningPodsIn(ctx, ns, "client"); err != nil || len(pods) > 0 {
			return false, fmt.Sprintf("client pods still running: %d (%v)", len(pods), err)
		}
		list, err := hostrunSlices(ctx, ns)
		if err != nil || len(list.Items) != 1 || list.Items[0].Labels[discoveryv1.LabelServiceName] != "client-metrics-service" || len(list.Items[0].Endpoints) != 1 {
			return false, fmt.Sprintf("hostrun's slices: %d (%v)", len(list.Items), err)
		}
		address = list.Items[0].Endpoints[0].Addresses[0]
		mfs, err := proctest.Scrape(local)
		if err != nil {
			return false, err.Error()
		}
		return proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}) >= 10, "fewer than 10 calls answered"
	}); err != nil {
		t.Fatal(err)
	}
	papi := prometheusAt(t, ns, mustPods(t, ns, "prometheus", true, 0)[0].Name)
	if err := poll(ctx, 2*time.Minute, "up{job=\"client\"} == 1 for "+address+":9001", func(ctx context.Context) (bool, string) {
		return targetUp(ctx, papi, "client", address+":9001")
	}); err != nil {
		t.Fatal(err)
	}
	mfs, err := proctest.Scrape(local)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}), proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "error"})
	t.Logf("--local client: %v calls answered, %v failed, through %s to the server pod; Prometheus scrapes it at %s:9001", ok, failed, s.target.local(20000), address)
	if failed > 0 {
		t.Errorf("the local client's calls: %v failed", failed)
	}

	s.setOptions(t)
	if err := poll(ctx, 3*time.Minute, "the client back in the cluster, no hostrun slice", func(ctx context.Context) (bool, string) {
		if err := suite.c.waitRolloutIn(ctx, ns, "client", time.Second); err != nil {
			return false, err.Error()
		}
		return noHostrunSlice(ctx, ns)
	}); err != nil {
		t.Fatal(err)
	}
	calls := newCallCounter(t, ns)
	ok0, _ := calls.read(t)
	if err := poll(ctx, 10*time.Second, "a successful call of the client pod", func(context.Context) (bool, string) {
		ok, _ := calls.read(t)
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

// inClusterCallStops sets a breakpoint at file:line in the server that
// Delve runs on this machine and waits for the first stop, which only a
// call of the in-cluster client can make (its name is CLIENT_NAME's
// default, "world"), then lets it go.
func inClusterCallStops(t *testing.T, file string, line int) {
	t.Helper()
	dlv, err := attach(serverDelve)
	if err != nil {
		t.Fatalf("attach to Delve at %s: %v", serverDelve, err)
	}
	bp, err := dlv.CreateBreakpoint(&api.Breakpoint{File: file, Line: line})
	if err != nil {
		t.Fatalf("breakpoint at %s:%d: %v", file, line, err)
	}
	select {
	case state := <-dlv.Continue():
		if state.Err != nil || state.CurrentThread == nil || state.CurrentThread.Breakpoint == nil || state.CurrentThread.Breakpoint.ID != bp.ID {
			t.Fatalf("stopped, but not at the breakpoint: %+v", state)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no call of the in-cluster client stopped at the breakpoint within 10s")
	}
	args, err := dlv.ListFunctionArgs(api.EvalScope{GoroutineID: -1}, api.LoadConfig{FollowPointers: true, MaxVariableRecurse: 2, MaxStringLen: 64, MaxStructFields: -1})
	if err != nil {
		t.Fatalf("the handler's arguments: %v", err)
	}
	if !hasStringField(args, "Name", "world") {
		t.Errorf("the call stopped at the breakpoint is not the in-cluster client's (name \"world\"): %+v", args)
	}
	if _, err := dlv.ClearBreakpoint(bp.ID); err != nil {
		t.Fatal(err)
	}
	if err := dlv.Disconnect(true); err != nil {
		t.Fatal(err)
	}
	t.Logf("a call of the in-cluster client stopped at %s:%d in the server on this machine", filepath.Base(file), line)
}
