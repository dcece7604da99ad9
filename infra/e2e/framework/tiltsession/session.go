// Package tiltsession runs `tilt up` in a throwaway copy of the repository
// (a git repository of its own, so every edit is a commit whose hash the new
// binary reports in echo_<program>_build_info), drives it through Tilt's CLI
// and API, and times edits as a person at a terminal sees them.
package tiltsession

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

// Session is `tilt up` in a throwaway copy of the repository.
type Session struct {
	h      Harness
	Target Target
	Dir    string
	Proc   *proctest.Process
	Rate   int // the client's calls per second
	Edits  int
	// the server's echo.go as copied, which each edit of the server changes
	ServerSource []byte
	// Probes of each program's pods, through port-forwards.
	Probes map[string][]*echo.PodProbe
	Calls  *echo.CallCounter
}

// Harness is what a session needs of the run.
type Harness struct {
	Tilt    string // the tilt binary
	Root    string // the repository
	Cluster *kube.Cluster
}

// Start copies the repository, starts `tilt up` in the copy deploying to
// target, with the client calling rate times a second and replicas server
// pods, and waits until every pod runs its build. Tilt stops when the test
// ends; what it deployed stays.
func (h Harness) Start(t testing.TB, target Target, replicas, rate int) *Session {
	t.Helper()
	if h.Tilt == "" {
		t.Skip("no tilt on PATH: the edit-and-reload loop needs a real Tilt")
	}
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", target.Port), time.Second); err == nil {
		conn.Close()
		t.Fatalf("something listens on port %d, most likely `tilt up`: stop it first, two Tilts would fight over the same resources", target.Port)
	}
	s := &Session{h: h, Target: target, Dir: t.TempDir(), Rate: rate, Probes: map[string][]*echo.PodProbe{}}
	s.copyRepository(t)
	var err error
	if s.ServerSource, err = os.ReadFile(filepath.Join(s.Dir, EditedFile["server"])); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	s.Up(t, append(target.Args(replicas, rate), target.UpOnly...))
	t.Cleanup(func() { s.Stop(t) })
	s.WaitReady(t, 10*time.Minute)
	ctx := t.Context()
	for _, app := range []string{"server", "client"} {
		if target.OnHost(app) {
			continue
		}
		if err := h.Cluster.WaitRollout(ctx, target.Namespace, app, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		s.Probes[app] = echo.NewProbes(t, h.Cluster, target.Namespace, app)
	}
	t.Logf("tilt up in a copy of the repository, namespace %s, %d server pods: rolled out with its builds in %v", target.Namespace, replicas, time.Since(began).Round(100*time.Millisecond))
	s.Calls = echo.NewCallCounter(t, h.Cluster, target.Namespace)
	return s
}

// Up starts tilt up in the session's copy with the Tiltfile options args
// ("--" first).
func (s *Session) Up(t testing.TB, args []string) {
	t.Helper()
	s.Proc = proctest.StartIn(t, s.Dir, s.h.Tilt, s.Target.Env(), append([]string{"up", "--port", fmt.Sprint(s.Target.Port), "--stream"}, args...)...)
}

// Stop stops Tilt as a person would (Ctrl-C), unless it has stopped
// already; what it deployed stays.
func (s *Session) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-s.Proc.Done():
		return
	default:
	}
	s.Proc.Signal(t, syscall.SIGINT)
	select {
	case <-s.Proc.Done():
	case <-time.After(30 * time.Second):
	}
}

// WaitReady waits until Tilt's API answers and the server and client
// resources are ready: deployed, with their pods ready.
func (s *Session) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := s.h.Command(s.Dir, s.Target.Env(), "wait", "--for=condition=Ready", "--timeout=1m",
			"uiresource/server", "uiresource/client", "--port", fmt.Sprint(s.Target.Port))
		if err == nil {
			return
		}
		select {
		case <-s.Proc.Done():
			t.Fatalf("tilt up exited: %v", s.Proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tilt wait: %v\n%s", err, out)
		}
		time.Sleep(time.Second) // Tilt's API is not up yet, or the resources not registered
	}
}

// Tilt runs a Tilt command against the session's Tilt and returns its output.
// The first argument is the subcommand; Tiltfile options may follow "--".
func (s *Session) Tilt(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := s.h.Command(s.Dir, s.Target.Env(), append([]string{args[0], "--port", fmt.Sprint(s.Target.Port)}, args[1:]...)...)
	if err != nil {
		t.Fatalf("tilt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return []byte(out)
}

// SetOptions changes the Tiltfile options while Tilt runs, as a person does
// with tilt args, which replaces every option given before: the session's
// own, then extra.
func (s *Session) SetOptions(t testing.TB, extra ...string) {
	t.Helper()
	s.Tilt(t, append(append([]string{"args"}, s.Target.Args(1, s.Rate)...), extra...)...)
}

// Command runs tilt with args in dir with the environment env, and returns
// its output.
func (h Harness) Command(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command(h.Tilt, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// CI runs `tilt ci` in the repository for target, with replicas server pods
// and the client calling rate times a second, and prints how long it took.
func (h Harness) CI(target Target, replicas, rate int) error {
	began := time.Now()
	cmd := exec.Command(h.Tilt, append([]string{"ci", "--timeout", "10m"}, target.Args(replicas, rate)...)...)
	cmd.Dir = h.Root
	cmd.Env = target.Env()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tilt ci: %w", err)
	}
	fmt.Printf("e2e: tilt ci: every resource ready in %v\n", time.Since(began).Round(100*time.Millisecond))
	return nil
}

// Down runs tilt down for target, with its options, deleting its namespace
// too.
func (h Harness) Down(t *testing.T, target Target) {
	t.Helper()
	out, err := h.Command(h.Root, target.Env(), append([]string{"down", "--delete-namespaces"}, target.Args(1, 10)...)...)
	if err != nil {
		t.Errorf("tilt down of %s: %v\n%s", target.Namespace, err, Tail(out))
	}
}

// Tail is the end of a long output.
func Tail(out string) string {
	if len(out) > 4000 {
		return "..." + out[len(out)-4000:]
	}
	return out
}
