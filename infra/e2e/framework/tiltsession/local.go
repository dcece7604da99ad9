package tiltsession

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

// LocalMetrics is the local server's /metrics: it listens where the
// forward would be.
func (s *Session) LocalMetrics() string { return "http://" + s.Target.Local(9000) + "/metrics" }

// EditLocal makes one edit of the server run by --local and times it: to
// a call through localhost:20000 that the new build answers (user), and to
// the in-cluster client's first call answered by the new process (total:
// the process's own counter passes the calls made through localhost).
func (s *Session) EditLocal(t testing.TB) EditResult {
	t.Helper()
	s.Edits++
	want := fmt.Sprintf("user (edit %d)", s.Edits)
	if _, err := s.UserCall("user"); err != nil {
		t.Fatalf("a call through %s before edit %d: %v", s.Target.Local(20000), s.Edits, err)
	}
	var r EditResult
	began := time.Now()
	rev := s.CommitAndWrite(t, EditedFile["server"], EditReply(t, s.ServerSource, s.Edits))
	r.User, r.Refused = FirstAnswer(t, fmt.Sprintf("local edit %d (revision %.8s) through %s", s.Edits, rev, s.Target.Local(20000)), began,
		func() bool { return localRevision(s.LocalMetrics()) == rev },
		func() (string, error) { return s.UserCall("user") }, want)
	// The new process counts the calls through localhost that it answered
	// (at least the one above); one more is the in-cluster client's.
	for {
		mfs, err := proctest.Scrape(s.LocalMetrics())
		if err == nil && echo.RevisionOf(mfs, "server") == rev && echo.Answered(mfs) > float64(1+r.Refused) {
			r.Total = time.Since(began)
			break
		}
		if time.Since(began) > EditTimeout {
			t.Fatalf("local edit %d: the in-cluster client's calls did not reach the new process within %v", s.Edits, EditTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// Tilt records the compile's end a moment after its command exits,
	// which may be after the new process serves.
	for range 40 {
		if compile, ok := s.BuildAfter(t, "server-compile", began); ok {
			r.Detect, r.Compile = compile.Start.Sub(began), compile.Finish.Sub(compile.Start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// localRevision is the revision that the local server's process reports.
func localRevision(url string) string {
	mfs, err := proctest.Scrape(url)
	if err != nil {
		return ""
	}
	return echo.RevisionOf(mfs, "server")
}

// RestoreLocalServer puts the server's code back after local edits.
func (s *Session) RestoreLocalServer(t *testing.T) {
	t.Helper()
	path := filepath.Join(s.Dir, EditedFile["server"])
	if current, err := os.ReadFile(path); err != nil || string(current) == string(s.ServerSource) {
		return
	}
	rev := s.CommitAndWrite(t, EditedFile["server"], s.ServerSource)
	if err := kube.Poll(t.Context(), EditTimeout, "the local server back on its own code", func(context.Context) (bool, string) {
		return localRevision(s.LocalMetrics()) == rev, ""
	}); err != nil {
		t.Fatal(err)
	}
}

// hostrunSlice is the label of the slices scripts/hostrun makes.
const hostrunSlice = "endpointslice.kubernetes.io/managed-by=hostrun.grpc-metrics.example.com"

// SwitchMode changes the session's options with tilt args, as a person does
// while Tilt runs (the session's own options, then extra), and returns
// the client's calls that failed from the switch until ready reports the
// switch done and the calls have settled.
func (s *Session) SwitchMode(t *testing.T, what string, ready func(context.Context) (bool, string), extra ...string) (failed float64, took time.Duration) {
	t.Helper()
	_, failed0 := s.Calls.Read(t)
	began := time.Now()
	s.SetOptions(t, extra...)
	if err := kube.Poll(t.Context(), 3*time.Minute, what, ready); err != nil {
		t.Fatal(err)
	}
	took = time.Since(began)
	time.Sleep(2 * SettleTime)
	_, failed1 := s.Calls.Read(t)
	return failed1 - failed0, took
}

// HostrunSlices lists the slices of scripts/hostrun in ns.
func HostrunSlices(ctx context.Context, c *kube.Cluster, ns string) (*discoveryv1.EndpointSliceList, error) {
	return c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: hostrunSlice})
}

// NoHostrunSlice is a poll condition: scripts/hostrun has withdrawn its
// slices from ns.
func NoHostrunSlice(ctx context.Context, c *kube.Cluster, ns string) (bool, string) {
	list, err := HostrunSlices(ctx, c, ns)
	if err != nil {
		return false, err.Error()
	}
	return len(list.Items) == 0, fmt.Sprintf("hostrun's slices: %d", len(list.Items))
}

// HostrunAddress is the address the slices of scripts/hostrun name, once
// both Services have one.
func HostrunAddress(ctx context.Context, c *kube.Cluster, ns string) (string, string) {
	list, err := HostrunSlices(ctx, c, ns)
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
