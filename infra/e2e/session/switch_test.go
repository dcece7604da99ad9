//go:build e2e

package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/e2e/framework"
	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
	"example.com/grpc-metrics/infra/proctest"
)

// --local server switched on and off from a fresh clone, and what hostrun
// does when the cluster changes under it: a Service made again, a hostrun
// killed with SIGKILL.

// switchSettle is how long the client's calls are counted once a switch
// has settled: each switch must leave 0 failed calls behind.
const switchSettle = 10 * time.Second

// switchResult is one switch of TestLocalSwitchesFromAFreshClone.
type switchResult struct {
	what           string
	took           time.Duration // from tilt args to settled
	afterImage     time.Duration // back: from the start of the server image's build to its pod's Ready
	during, behind float64       // failed calls until settled, and in switchSettle after
}

func (r switchResult) String() string {
	image := "—"
	if r.afterImage != 0 {
		image = fmt.Sprintf("%.1f s", r.afterImage.Seconds())
	}
	return fmt.Sprintf("| %s | %.1f s | %s | %v | %v |", r.what, r.took.Seconds(), image, r.during, r.behind)
}

// TestLocalSwitchesFromAFreshClone: tilt up -- --local server in a copy of
// the repository that has never built the server for the cluster, then
// back, on and back again with the client calling at E2E_RATE. Once each
// switch settles no call fails, and each way back has a ready pod within
// 30s of the server image's build. Then, on this machine: the Service made
// again, and a hostrun killed with SIGKILL.
func TestLocalSwitchesFromAFreshClone(t *testing.T) {
	target := tiltsession.DefaultTarget(namespace)
	target.UpOnly = []string{"--local", "server"}
	s := startTiltAt(t, target, 1, suite.Rate)
	if _, err := os.Stat(filepath.Join(s.Dir, "build", "server")); !os.IsNotExist(err) {
		t.Fatalf("the copy has a build of the server for the cluster (%v): not a fresh clone's first switch", err)
	}
	if err := kube.Poll(t.Context(), 3*time.Minute, "--local server serving the client", s.localServes(0)); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for i := range 2 {
		for _, on := range []bool{false, true} {
			r := s.switchLocal(t, on, i+1)
			rows = append(rows, r.String())
			if r.behind > 0 {
				t.Errorf("%s: %v client calls failed in the %v after it settled, want 0", r.what, r.behind, switchSettle)
			}
			if r.afterImage > 30*time.Second {
				t.Errorf("%s: the server pod was ready %v after its image's build began, want at most 30s", r.what, r.afterImage)
			}
		}
	}
	t.Logf("switches at %d calls/s, from a fresh clone started with --local server:\n| switch | settled after | pod ready after its build began | failed calls until settled | failed calls in the %v after |\n|---|---|---|---|---|\n%s",
		s.Rate, switchSettle, strings.Join(rows, "\n"))
	t.Run("the Service made again", func(t *testing.T) { s.serviceMadeAgain(t) })
	t.Run("hostrun started while the API server is stopped", func(t *testing.T) { s.hostrunDuringPause(t) })
	t.Run("a hostrun killed with SIGKILL, then tilt up without --local", func(t *testing.T) { s.sweepAfterSIGKILL(t) })
}

// localServes is a poll condition: hostrun's slices name this machine, no
// server pod runs, and the local server has answered more than after
// calls.
func (s *session) localServes(after float64) func(context.Context) (bool, string) {
	return func(ctx context.Context) (bool, string) {
		if a, why := tiltsession.HostrunAddress(ctx, suite.Cluster, s.Target.Namespace); a == "" {
			return false, why
		}
		if pods, err := suite.Cluster.RunningPods(ctx, s.Target.Namespace, "server"); err != nil || len(pods) > 0 {
			return false, fmt.Sprintf("server pods still running: %d (%v)", len(pods), err)
		}
		n, err := echo.AnsweredCalls(s.LocalMetrics())
		if err != nil {
			return false, err.Error()
		}
		return n > after, fmt.Sprintf("the local server has answered %v calls", n)
	}
}

// switchLocal switches the server to this machine (on) or back to the
// cluster with tilt args, and counts the client's failed calls until the
// switch settles and in switchSettle after.
func (s *session) switchLocal(t *testing.T, on bool, n int) switchResult {
	t.Helper()
	ctx, ns := t.Context(), s.Target.Namespace
	r := switchResult{what: fmt.Sprintf("back %d", n)}
	_, failed0 := s.Calls.Read(t)
	began := time.Now()
	if on {
		r.what = fmt.Sprintf("on %d", n)
		s.SetOptions(t, "--local", "server")
		if err := kube.Poll(ctx, 3*time.Minute, r.what+": the client's calls on this machine", s.localServes(0)); err != nil {
			t.Fatal(err)
		}
	} else {
		s.SetOptions(t)
		if err := kube.Poll(ctx, 3*time.Minute, r.what+": a ready server pod, no hostrun slice, localhost:20000 through Tilt's forward", func(ctx context.Context) (bool, string) {
			if err := suite.Cluster.WaitRollout(ctx, ns, "server", time.Second); err != nil {
				return false, err.Error()
			}
			if ok, why := tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns); !ok {
				return false, why
			}
			_, err := s.UserCall("user")
			return err == nil, fmt.Sprint(err)
		}); err != nil {
			t.Fatal(err)
		}
		r.afterImage = s.podReadyAfterImage(t, began)
	}
	r.took = time.Since(began)
	_, failed1 := s.Calls.Read(t)
	time.Sleep(switchSettle)
	_, failed2 := s.Calls.Read(t)
	r.during, r.behind = failed1-failed0, failed2-failed1
	t.Logf("%s: settled after %.1fs; %v calls failed until then, %v in the %v after", r.what, r.took.Seconds(), r.during, r.behind, switchSettle)
	return r
}

// podReadyAfterImage is the time from the start of the server's build that
// Tilt made after since (its image, then its deployment) to its pod's
// Ready: at least the time from the built image to the Ready.
func (s *session) podReadyAfterImage(t *testing.T, since time.Time) time.Duration {
	t.Helper()
	var build tiltsession.BuildRecord
	for _, b := range s.Resource(t, "server").Status.BuildHistory {
		if b.Start.After(since) && (build.Start.IsZero() || b.Start.Before(build.Start)) {
			build = b // the first after since
		}
	}
	if build.Start.IsZero() {
		t.Fatalf("Tilt records no build of the server after %v", since)
	}
	pod := suite.Cluster.MustPods(t, s.Target.Namespace, "server", true, 1)[0]
	for _, c := range pod.Status.Conditions {
		if c.Type == "Ready" {
			// Both to the second: the API keeps whole seconds.
			return c.LastTransitionTime.Sub(build.Start.Truncate(time.Second))
		}
	}
	t.Fatalf("pod %s has no Ready condition", pod.Name)
	return 0
}

// serviceMadeAgain: the server's Services deleted and made again (the
// server resource disabled and enabled in Tilt) while it runs here. The
// garbage collector deletes the slices with the old Services; hostrun
// makes them again, and the client's calls reach this machine within 5s of
// the new Service.
func (s *session) serviceMadeAgain(t *testing.T) {
	ctx, ns := t.Context(), s.Target.Namespace
	old, err := suite.Cluster.Client.CoreV1().Services(ns).Get(ctx, "server-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Tilt(t, "disable", "server")
	if err := kube.Poll(ctx, time.Minute, "server-service deleted", func(ctx context.Context) (bool, string) {
		_, err := suite.Cluster.Client.CoreV1().Services(ns).Get(ctx, "server-service", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	}); err != nil {
		t.Fatal(err)
	}
	s.Tilt(t, "enable", "server")
	var made time.Time
	var uid string
	if err := proctest.Poll(ctx, 50*time.Millisecond, time.Minute, "server-service made again", func(ctx context.Context) (bool, string) {
		svc, err := suite.Cluster.Client.CoreV1().Services(ns).Get(ctx, "server-service", metav1.GetOptions{})
		if err != nil || svc.UID == old.UID {
			return false, fmt.Sprint(err)
		}
		made, uid = time.Now(), string(svc.UID)
		return true, ""
	}); err != nil {
		t.Fatal(err)
	}
	before, err := echo.AnsweredCalls(s.LocalMetrics())
	if err != nil {
		t.Fatal(err)
	}
	framework.TimedTarget(t, "hostrun's slice owned by the new Service, and the client's calls here, after the Service was made again", made, 50*time.Millisecond, 5*time.Second, func(ctx context.Context) (bool, string) {
		list, err := tiltsession.HostrunSlices(ctx, suite.Cluster, ns)
		if err != nil {
			return false, err.Error()
		}
		owned := false
		for _, sl := range list.Items {
			for _, o := range sl.OwnerReferences {
				owned = owned || (sl.Labels[discoveryv1.LabelServiceName] == "server-service" && string(o.UID) == uid)
			}
		}
		n, err := echo.AnsweredCalls(s.LocalMetrics())
		return owned && err == nil && n > before+1, fmt.Sprintf("a slice owned by the new Service: %v; calls answered here since: %v", owned, n-before)
	})
}

// hostrunDuringPause: server-local started again (disabled and enabled in
// Tilt) while the API server is stopped for kube.APIPause, as a tilt up with a
// VPN down would: the program serves, and hostrun makes its slices within
// 10s of the API server's return.
func (s *session) hostrunDuringPause(t *testing.T) {
	ctx, ns := t.Context(), s.Target.Namespace
	s.Tilt(t, "disable", "server-local")
	if err := kube.Poll(ctx, time.Minute, "hostrun's slices withdrawn", func(ctx context.Context) (bool, string) { return tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns) }); err != nil {
		t.Fatal(err)
	}
	resume := kube.StopAPIServer(t)
	stopped := time.Now()
	s.Tilt(t, "enable", "server-local")
	if err := kube.Poll(ctx, kube.APIPause, "the local server answering", func(context.Context) (bool, string) {
		_, err := echo.AnsweredCalls(s.LocalMetrics())
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("the local server answered %.1fs after the API server was stopped", time.Since(stopped).Seconds())
	time.Sleep(kube.APIPause - time.Since(stopped))
	before, err := echo.AnsweredCalls(s.LocalMetrics())
	if err != nil {
		t.Fatal(err)
	}
	resume()
	resumed := time.Now()
	framework.TimedTarget(t, "hostrun's slices, and the client's calls here, after the API server was back", resumed, 100*time.Millisecond, 10*time.Second, func(ctx context.Context) (bool, string) {
		if a, why := tiltsession.HostrunAddress(ctx, suite.Cluster, ns); a == "" {
			return false, why
		}
		n, err := echo.AnsweredCalls(s.LocalMetrics())
		return err == nil && n > before+1, fmt.Sprintf("calls answered here since: %v (%v)", n-before, err)
	})
}

// sweepAfterSIGKILL: hostrun killed with SIGKILL leaves its slices, which
// name this machine where nothing serves any more; Tilt stopped, then
// tilt up without --local. Within 10s of the command no slice names this
// machine, and Prometheus shows no server target down.
func (s *session) sweepAfterSIGKILL(t *testing.T) {
	ctx, ns := t.Context(), s.Target.Namespace
	address, why := tiltsession.HostrunAddress(ctx, suite.Cluster, ns)
	if address == "" {
		t.Fatal(why)
	}
	pid := processIn(t, s.Dir, filepath.Join("build", "local", "hostrun")+"\x00run\x00")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.Stop(t)
	if list, err := tiltsession.HostrunSlices(ctx, suite.Cluster, ns); err != nil || len(list.Items) == 0 {
		t.Fatalf("hostrun's slices after its SIGKILL: %v (%v), want them left behind", list, err)
	}
	began := time.Now()
	s.Up(t, s.Target.Args(1, s.Rate))
	framework.TimedTarget(t, "no hostrun slice after tilt up without --local", began, 100*time.Millisecond, 10*time.Second, func(ctx context.Context) (bool, string) {
		return tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns)
	})
	s.WaitReady(t, 5*time.Minute)
	papi := echo.PrometheusAt(t, suite.Cluster, ns, suite.Cluster.MustPods(t, ns, "prometheus", true, 0)[0].Name)
	if err := kube.Poll(ctx, 2*time.Minute, "every server target up, none at "+address, func(ctx context.Context) (bool, string) {
		return serverTargetsUp(ctx, papi, address)
	}); err != nil {
		t.Fatal(err)
	}
	// And it stays so over the next scrapes.
	for range 5 {
		time.Sleep(3 * time.Second)
		if ok, why := serverTargetsUp(ctx, papi, address); !ok {
			t.Errorf("after the sweep: %s", why)
		}
	}
}

// serverTargetsUp is a poll condition: Prometheus's server job has targets,
// all up, none at address.
func serverTargetsUp(ctx context.Context, papi promv1.API, address string) (bool, string) {
	targets, err := papi.Targets(ctx)
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	ok := true
	for _, tg := range targets.Active {
		if string(tg.Labels["job"]) != "server" {
			continue
		}
		seen = append(seen, fmt.Sprintf("%s %s", tg.Labels["instance"], tg.Health))
		ok = ok && tg.Health == promv1.HealthGood && !strings.HasPrefix(string(tg.Labels["instance"]), address+":")
	}
	return ok && len(seen) > 0, fmt.Sprintf("the server job's targets: %v", seen)
}
