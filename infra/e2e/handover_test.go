//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// readyAndRestarts is a pod's readiness and its containers' restarts.
func readyAndRestarts(p corev1.Pod, restarts int32) string {
	ready := "not ready"
	if podReady(&p) {
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
	defer s.restoreServer(t)
	before := podStates(t, s.target.ns, "app in (server,client)", readyAndRestarts)

	poll, stop := s.pollForwards(t, 9000, 9001)
	var failed float64
	for _, r := range append(s.editN(t, "server", 20), s.editN(t, "client", 10)...) {
		failed += r.failed
	}
	s.brokenBinary(t)
	failed += s.edit(t, "server").failed // the next build takes over again
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
	for _, line := range s.forwardErrors(0) {
		t.Errorf("Tilt's log: %s", line)
	}
	after := podStates(t, s.target.ns, "app in (server,client)", readyAndRestarts)
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
func (s *tiltSession) brokenBinary(t *testing.T) {
	t.Helper()
	const want = "user (edit "
	before, err := s.userCall("user")
	if err != nil || !strings.HasPrefix(before, want) {
		t.Fatalf("a call through %s before the broken binary: %q, %v", s.target.local(20000), before, err)
	}
	logBefore := len(s.proc.Output())
	if err := os.WriteFile(filepath.Join(s.dir, "build", "server"), []byte("not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pods := len(s.probes["server"])
	began := time.Now()
	for {
		refused := 0
		for line := range strings.Lines(s.proc.Output()[logBefore:]) {
			if strings.Contains(line, "could not start the program") && strings.Contains(line, "exec format error") {
				refused++
			}
		}
		if refused == pods {
			break
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("the broken binary: %d of %d server pods said in Tilt's log that they could not start it within %v:\n%s",
				refused, pods, editTimeout, s.proc.Output()[logBefore:])
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 10 { // the previous edit's process answers, through the forward
		if got, err := s.userCall("user"); got != before {
			t.Errorf("after the broken binary, a call through %s: %q, %v, want %q", s.target.local(20000), got, err, before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the broken binary: every server pod refused it in %.2fs and served on", time.Since(began).Seconds())
}
