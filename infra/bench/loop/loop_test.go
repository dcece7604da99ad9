//go:build e2e

package loop

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// brokenEdit writes a server file that does not compile, checks that Tilt
// reports the error on server-compile while the pods keep the previous build
// and keep answering with no failed call, then fixes the file and times the
// recovery like an edit.
func brokenEdit(t testing.TB, s *tiltsession.Session) (broken time.Duration, failed float64, fix tiltsession.EditResult) {
	t.Helper()
	path := tiltsession.EditedFile["server"]
	original, err := os.ReadFile(filepath.Join(s.Dir, path))
	if err != nil {
		t.Fatal(err)
	}
	revBefore := map[string]string{}
	for _, p := range s.Probes["server"] {
		revBefore[p.Pod], _ = p.State("server")
	}
	_, failed0 := s.Calls.Read(t)
	began := time.Now()
	if err := os.WriteFile(filepath.Join(s.Dir, path), append(slices.Clone(original), "\nfunc broken( {\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	var build tiltsession.BuildRecord
	for {
		var ok bool
		if build, ok = s.BuildAfter(t, "server-compile", began); ok {
			break
		}
		if time.Since(began) > tiltsession.EditTimeout {
			t.Fatalf("server-compile did not build the broken edit within %v", tiltsession.EditTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if build.Error == "" {
		t.Errorf("server-compile built a file that does not compile without an error")
	}
	if st := s.Resource(t, "server-compile").Status.UpdateStatus; st != "error" {
		t.Errorf("server-compile update status %q, want error (shown red in the UI)", st)
	}
	if !strings.Contains(s.Proc.Output(), "syntax error") {
		t.Error("the compiler's error is not in Tilt's log")
	}
	// While broken: the pods keep the previous build and keep answering.
	for range 5 {
		time.Sleep(2 * time.Second)
		for _, p := range s.Probes["server"] {
			rev, answering := p.State("server")
			if rev != revBefore[p.Pod] || !answering {
				t.Errorf("pod %s while the edit is broken: revision %.8s (was %.8s), answering %v", p.Pod, rev, revBefore[p.Pod], answering)
			}
		}
	}
	_, failed1 := s.Calls.Read(t)
	broken = time.Since(began)
	// Fixing the file resumes the loop.
	if err := os.WriteFile(filepath.Join(s.Dir, path), original, 0o644); err != nil {
		t.Fatal(err)
	}
	fix = s.Edit(t, "server")
	return broken, failed1 - failed0, fix
}

// loop runs the edits of one program, one per b.Loop iteration, and reports
// the figures.
func loop(b *testing.B, s *tiltsession.Session, program string) {
	var rs []tiltsession.EditResult
	for b.Loop() {
		r := s.Edit(b, program)
		rs = append(rs, r)
		b.Logf("%s edit %2d: %6.2fs  (watch %.2fs, compile %.2fs, hand-off %.2fs, sync %.2fs, restart to answer %.2fs), %v failed calls; through localhost:20000 %.2fs (%d calls failed while polling)",
			program, len(rs), r.Total.Seconds(), r.Detect.Seconds(), r.Compile.Seconds(), r.Handoff.Seconds(), r.Sync.Seconds(), r.Restart.Seconds(), r.Failed, r.User.Seconds(), r.Refused)
	}
	sum := tiltsession.Summarize(rs)
	if program == "server" {
		b.ReportMetric(sum.UserP50.Seconds(), "user-p50-s")
		b.ReportMetric(sum.UserMax.Seconds(), "user-max-s")
		b.ReportMetric(float64(sum.Refused), "polls-failed")
	}
	b.ReportMetric(sum.P50.Seconds(), "p50-s")
	b.ReportMetric(sum.Max.Seconds(), "max-s")
	b.ReportMetric(sum.Failed, "failed-calls")
	b.ReportMetric(sum.Compile.Seconds(), "compile-p50-s")
	b.ReportMetric(sum.Sync.Seconds(), "sync-p50-s")
	b.ReportMetric(sum.Restart.Seconds(), "restart-p50-s")
}

// BenchmarkLiveUpdate times the edit-and-reload loop under a real Tilt with
// the client calling at E2E_RATE: each iteration of "server" and "client" is
// one edit of that program. Then, once, an edit of the server that does not
// compile, and its fix. Run it with scripts/bench --loop.
//
// E2E_SERVER_REPLICAS sets the server pods (default 1, the Tiltfile's).
func BenchmarkLiveUpdate(b *testing.B) {
	replicas := 1
	if v := os.Getenv("E2E_SERVER_REPLICAS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("E2E_SERVER_REPLICAS=%q: not a positive whole number", v)
		}
		replicas = n
	}
	s := startTilt(b, replicas)
	b.Run("server", func(b *testing.B) { loop(b, s, "server") })
	b.Run("client", func(b *testing.B) { loop(b, s, "client") })
	broken, failed, fix := brokenEdit(b, s)
	s.RestoreServer(b)
	b.Logf("broken edit: error on server-compile, pods kept the previous build and answered for %.1fs, %v calls failed; after the fix, new code answering in %.2fs (%v failed)",
		broken.Seconds(), failed, fix.Total.Seconds(), fix.Failed)
	if failed+fix.Failed != 0 {
		b.Errorf("%v calls failed during and after the broken edit, want 0", failed+fix.Failed)
	}
}
