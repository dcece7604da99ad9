//go:build e2e

package loop

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// BenchmarkLoopModes times the server's edit loop in the cluster and with
// --local server, alternating in one Tilt session with the client calling at
// E2E_RATE: each iteration is a round of 3 edits in the cluster, a switch to
// --local server, 3 edits there and the switch back. Each edit is timed from
// the save to a call through localhost:20000 that the new build answers.
// Run it with scripts/bench --loop-local.
func BenchmarkLoopModes(b *testing.B) {
	s := startTilt(b, 1)
	ns := s.Target.Namespace
	var cluster, local []time.Duration
	var failed float64
	wait := func(what string, cond func(context.Context) (bool, string)) {
		if err := kube.Poll(b.Context(), 3*time.Minute, what, cond); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		_, failed0 := s.Calls.Read(b)
		for range 3 {
			r := s.Edit(b, "server")
			cluster = append(cluster, r.User)
			b.Logf("in the cluster: %.2fs (compile %.2fs, sync %.2fs)", r.User.Seconds(), r.Compile.Seconds(), r.Sync.Seconds())
		}
		s.SetOptions(b, "--local", "server")
		wait("--local server serving the client", func(ctx context.Context) (bool, string) {
			if a, why := tiltsession.HostrunAddress(ctx, suite.Cluster, ns); a == "" {
				return false, why
			}
			pods, err := suite.Cluster.RunningPods(ctx, ns, "server")
			return err == nil && len(pods) == 0, fmt.Sprintf("%d server pods", len(pods))
		})
		for range 3 {
			r := s.EditLocal(b)
			local = append(local, r.User)
			b.Logf("on this machine: %.2fs (watch %.2fs, compile %.2fs)", r.User.Seconds(), r.Detect.Seconds(), r.Compile.Seconds())
		}
		s.SetOptions(b)
		wait("the server back in the cluster", func(ctx context.Context) (bool, string) {
			if err := suite.Cluster.WaitRollout(ctx, ns, "server", time.Second); err != nil {
				return false, err.Error()
			}
			return tiltsession.NoHostrunSlice(ctx, suite.Cluster, ns)
		})
		// The local process lets go of localhost:20000 a moment after its
		// slices go; Tilt's forward to the pod binds it on its next retry.
		time.Sleep(time.Second)
		wait("Tilt's forward of localhost:20000 to the pod", func(context.Context) (bool, string) {
			_, err := s.UserCall("user")
			return err == nil, fmt.Sprint(err)
		})
		s.Probes["server"] = echo.NewProbes(b, suite.Cluster, ns, "server")
		time.Sleep(tiltsession.SettleTime)
		_, failed1 := s.Calls.Read(b)
		failed += failed1 - failed0
	}
	pc, pl := tiltsession.Median(cluster), tiltsession.Median(local)
	b.Logf("save to new code through localhost:20000, %d edits each: in the cluster p50 %.2fs (%.2f-%.2f), on this machine p50 %.2fs (%.2f-%.2f): %.2fx; %v client calls failed, switches included",
		len(cluster), pc.Seconds(), slices.Min(cluster).Seconds(), slices.Max(cluster).Seconds(),
		pl.Seconds(), slices.Min(local).Seconds(), slices.Max(local).Seconds(), pl.Seconds()/pc.Seconds(), failed)
	b.ReportMetric(pc.Seconds(), "cluster-p50-s")
	b.ReportMetric(pl.Seconds(), "local-p50-s")
	b.ReportMetric(pl.Seconds()/pc.Seconds(), "local/cluster")
	b.ReportMetric(failed, "failed-calls")
}
