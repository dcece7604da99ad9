//go:build e2e

package session

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// readyAndRestarts is a pod's readiness and its containers' restarts.
func readyAndRestarts(p corev1.Pod, restarts int32) string {
	ready := "not ready"
	if kube.PodReady(&p) {
		ready = "ready"
	}
	return fmt.Sprintf("%s, %d restarts", ready, restarts)
}

// TestLiveUpdateHandsOver: 20 live updates of the server with 2 pods and 10
// of the client under a real Tilt, then one of a server binary that is not
// a program, while a terminal opens a new connection to every forward (gRPC
// 20000, metrics 9000 and 9001) every 100ms and the in-cluster client calls
// 60 times a second. Nothing fails, no forward breaks, and no pod restarts
// or leaves Ready.
func TestLiveUpdateHandsOver(t *testing.T) {
	s := startTilt(t, 2, 60)
	defer s.RestoreServer(t)
	// Tilt's forwards from here on, during the live updates: the start may
	// replace the pods another session left, and Tilt has logged a failed
	// reconnect of its own forward then ("address already in use").
	logFrom := len(s.Proc.Output())
	before := suite.Cluster.PodStates(t, s.Target.Namespace, "app in (server,client)", readyAndRestarts)

	poll, stop := s.PollForwards(t, 9000, 9001)
	var failed float64
	for _, r := range append(s.EditN(t, "server", 20), s.EditN(t, "client", 10)...) {
		failed += r.Failed
	}
	s.brokenBinary(t)
	failed += s.Edit(t, "server").Failed // the next build takes over again
	stop()

	if n := poll.Failed(); n > 0 {
		t.Errorf("%d of %d connections through the forwards failed, want 0:\n%s", n, n+poll.OK(), strings.Join(poll.Failures(), "\n"))
	}
	if poll.OK() == 0 {
		t.Error("no connection through the forwards worked")
	}
	if failed != 0 {
		t.Errorf("%v in-cluster client calls failed, want 0", failed)
	}
	for _, line := range s.ForwardErrors(logFrom) {
		t.Errorf("Tilt's log: %s", line)
	}
	after := suite.Cluster.PodStates(t, s.Target.Namespace, "app in (server,client)", readyAndRestarts)
	for name, state := range before {
		if after[name] != state {
			t.Errorf("pod %s: %s before the live updates, %q after, want unchanged", name, state, after[name])
		}
	}
	t.Logf("32 live updates: %d connections through the forwards ok, %d failed; %v client calls failed", poll.OK(), poll.Failed(), failed)
}

// brokenBinary puts a file that is not a program where the server's binary
// is built, as a failed or cut-short build could. Tilt live-updates it into
// every server pod; each pod's supervisor cannot start it, says why in the
// Tilt log, and the process of the previous edit serves on.
func (s *session) brokenBinary(t *testing.T) {
	t.Helper()
	const want = "user (edit "
	before, err := s.UserCall("user")
	if err != nil || !strings.HasPrefix(before, want) {
		t.Fatalf("a call through %s before the broken binary: %q, %v", s.Target.Local(20000), before, err)
	}
	logBefore := len(s.Proc.Output())
	if err := os.WriteFile(filepath.Join(s.Dir, "build", "server"), []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pods := len(s.Probes["server"])
	began := time.Now()
	for {
		refused := 0
		for line := range strings.Lines(s.Proc.Output()[logBefore:]) {
			if strings.Contains(line, "could not start the program") && strings.Contains(line, "exec format error") {
				refused++
			}
		}
		if refused == pods {
			break
		}
		if time.Since(began) > tiltsession.EditTimeout {
			t.Fatalf("the broken binary: %d of %d server pods said in Tilt's log that they could not start it within %v:\n%s",
				refused, pods, tiltsession.EditTimeout, s.Proc.Output()[logBefore:])
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 10 { // the previous edit's process answers, through the forward
		if got, err := s.UserCall("user"); got != before {
			t.Errorf("after the broken binary, a call through %s: %q, %v, want %q", s.Target.Local(20000), got, err, before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the broken binary: every server pod refused it in %.2fs and served on", time.Since(began).Seconds())
}
