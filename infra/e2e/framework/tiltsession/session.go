// Package tiltsession runs `tilt up` in a throwaway copy of the repository
// (a git repository of its own, so every edit is a commit whose hash the new
// binary reports in echo_<program>_build_info), drives it through Tilt's CLI
// and API, and times edits as a person at a terminal sees them.
package tiltsession

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

// A Tilt session: `tilt up` in a throwaway copy of the repository (a git
// repository of its own, so every edit is a commit whose hash the new binary
// reports in echo_<program>_build_info), driven through Tilt's CLI and API.

const DefaultPort = 10350 // Tilt's API and UI: a second Tilt would fight over the same resources

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

// Target is where a Tilt session deploys, and how it is reached.
type Target struct {
	Kubeconfig string   // KUBECONFIG of the session; "" for this process's
	Namespace  string   // the Tiltfile's --namespace
	Port       int      // Tilt's web port (tilt up --port)
	Offset     int      // the Tiltfile's --port-offset
	Options    []string // further Tiltfile options (--allowed-context...)
	// Tiltfile options of tilt up alone, which the first tilt args drops
	// (--local server, to start with).
	UpOnly []string
}

// OnHost reports whether tilt up runs program on this machine (--local).
func (tt Target) OnHost(program string) bool {
	for i, o := range tt.UpOnly {
		if o == "--local" && i+1 < len(tt.UpOnly) && tt.UpOnly[i+1] == program {
			return true
		}
	}
	return false
}

// DefaultTarget is the current kube context, namespace ns, Tilt's default
// port and no offset.
func DefaultTarget(ns string) Target { return Target{Namespace: ns, Port: DefaultPort} }

// Env is the environment of tilt commands of the target.
func (tt Target) Env() []string {
	if tt.Kubeconfig == "" {
		return os.Environ()
	}
	return append(os.Environ(), "KUBECONFIG="+tt.Kubeconfig)
}

// Args are the Tiltfile options of the target, after "--".
func (tt Target) Args(replicas, rate int) []string {
	args := []string{"--", "--client-rate", strconv.Itoa(rate), "--client-concurrency", "4", "--server-replicas", strconv.Itoa(replicas)}
	if tt.Namespace != "echo" {
		args = append(args, "--namespace", tt.Namespace)
	}
	if tt.Offset != 0 {
		args = append(args, "--port-offset", strconv.Itoa(tt.Offset))
	}
	return append(args, tt.Options...)
}

// Local is the address of a port-forward of the target: localhost, port
// plus the offset.
func (tt Target) Local(port int) string {
	return fmt.Sprintf("127.0.0.1:%d", port+tt.Offset)
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

// copyRepository copies the files git knows (tracked, and new ones not
// ignored) into s.dir and commits them in a repository of its own.
func (s *Session) copyRepository(t testing.TB) {
	t.Helper()
	out := s.Git(t, s.h.Root, nil, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(strings.TrimRight(out, "\x00"), "\x00") {
		src, dst := filepath.Join(s.h.Root, f), filepath.Join(s.Dir, f)
		info, err := os.Lstat(src)
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	s.Git(t, s.Dir, nil, "init", "-q")
	s.Git(t, s.Dir, nil, "add", "-A")
	s.Git(t, s.Dir, nil, "commit", "-q", "-m", "copy for the live-update loop")
}

// Git runs Git in dir with stdin and returns its output.
func (s *Session) Git(t testing.TB, dir string, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@localhost",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@localhost")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
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

// CommitAndWrite makes content the new version of path: first a commit in
// the copy's repository (without touching the work tree, which Tilt
// watches), then the file itself, so the build it triggers reports that
// commit as its revision. It returns the commit hash.
func (s *Session) CommitAndWrite(t testing.TB, path string, content []byte) string {
	t.Helper()
	blob := strings.TrimSpace(s.Git(t, s.Dir, content, "hash-object", "-w", "--stdin"))
	s.Git(t, s.Dir, nil, "update-index", "--add", "--cacheinfo", "100644,"+blob+","+path)
	tree := strings.TrimSpace(s.Git(t, s.Dir, nil, "write-tree"))
	commit := strings.TrimSpace(s.Git(t, s.Dir, nil, "commit-tree", tree, "-p", "HEAD", "-m", "edit "+path))
	s.Git(t, s.Dir, nil, "update-ref", "HEAD", commit)
	if err := os.WriteFile(filepath.Join(s.Dir, path), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return commit
}

// BuildRecord is one entry of a Tilt resource's build history.
type BuildRecord struct {
	Start  time.Time `json:"startTime"`
	Finish time.Time `json:"finishTime"`
	Error  string    `json:"error"`
}

// Resource is the part of a Tilt UIResource these checks read.
type Resource struct {
	Status struct {
		BuildHistory []BuildRecord `json:"buildHistory"`
		UpdateStatus string        `json:"updateStatus"`
		CurrentBuild struct {
			StartTime string `json:"startTime"`
		} `json:"currentBuild"`
		PendingBuildSince string `json:"pendingBuildSince"`
	} `json:"status"`
}

// Idle reports whether the resource builds nothing and has nothing to build.
func (r Resource) Idle() bool {
	return r.Status.CurrentBuild.StartTime == "" && r.Status.PendingBuildSince == ""
}

// Settle waits until the resources named build nothing, for a second in a
// row: after a change of options, Tilt may build an image from the binary
// the previous options compiled, then live-update the new one.
func (s *Session) Settle(t testing.TB, names ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	quietSince := time.Now()
	for time.Since(quietSince) < time.Second {
		for _, n := range names {
			// One the new options bring may not exist yet.
			out, err := s.h.Command(s.Dir, s.Target.Env(), "get", "uiresource", n, "-o", "json", "--port", fmt.Sprint(s.Target.Port))
			var r Resource
			if err != nil || json.Unmarshal([]byte(out), &r) != nil || !r.Idle() {
				quietSince = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still build after 3 minutes", names)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *Session) Resource(t testing.TB, name string) Resource {
	t.Helper()
	var r Resource
	if err := json.Unmarshal(s.Tilt(t, "get", "uiresource", name, "-o", "json"), &r); err != nil {
		t.Fatalf("tilt get uiresource %s: %v", name, err)
	}
	return r
}

// BuildAfter returns the newest build of resource name that started after
// since and has finished, if any.
func (s *Session) BuildAfter(t testing.TB, name string, since time.Time) (BuildRecord, bool) {
	t.Helper()
	return s.Resource(t, name).buildAfter(since)
}

// buildAfter returns the newest build that started after since and has
// finished, if any.
func (r Resource) buildAfter(since time.Time) (BuildRecord, bool) {
	for _, b := range r.Status.BuildHistory {
		if b.Start.After(since) && !b.Finish.IsZero() {
			return b, true
		}
	}
	return BuildRecord{}, false
}

// ClickButton clicks a button of the Tilt UI as the web UI does: it sets the
// time of the last click in the status of the UIButton, through the API
// server of the session's Tilt (its kubeconfig is in Tilt's own directory).
func (s *Session) ClickButton(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("TILT_DEV_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".tilt-dev")
	}
	apiServer := "tilt-default" // Tilt's name for the API server of the default port
	if s.Target.Port != 10350 {
		apiServer = fmt.Sprintf("tilt-%d", s.Target.Port)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: filepath.Join(dir, "config")},
		&clientcmd.ConfigOverrides{CurrentContext: apiServer}).ClientConfig()
	if err != nil {
		t.Fatalf("Tilt's API server: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	buttons := dyn.Resource(schema.GroupVersionResource{Group: "tilt.dev", Version: "v1alpha1", Resource: "uibuttons"})
	b, err := buttons.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("button %s: %v", name, err)
	}
	if err := unstructured.SetNestedField(b.Object, metav1.NowMicro().UTC().Format("2006-01-02T15:04:05.000000Z07:00"), "status", "lastClickedAt"); err != nil {
		t.Fatal(err)
	}
	if _, err := buttons.UpdateStatus(t.Context(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("click %s: %v", name, err)
	}
}

// PollForwards opens a new connection to Tilt's forwards of the server's
// gRPC port and of metricsPorts every 100ms, as a person at a terminal does,
// until stop is called.
func (s *Session) PollForwards(t testing.TB, metricsPorts ...int) (p *proctest.Poller, stop func()) {
	p = new(proctest.Poller)
	var metrics []string
	for _, port := range metricsPorts {
		metrics = append(metrics, s.Target.Local(port))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, 100*time.Millisecond, s.Target.Local(20000), metrics...) })
	return p, func() { cancel(); wg.Wait() }
}

// ForwardErrors returns the lines of Tilt's log, from byte from on, that tell
// of a port-forward's error or lost connection.
func (s *Session) ForwardErrors(from int) []string {
	return forwardErrors(s.Proc.Output()[from:])
}

// forwardErrors returns the lines of a Tilt log that tell of a
// port-forward's error or lost connection.
func forwardErrors(log string) []string {
	var lines []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "port-forward") && (strings.Contains(line, "rror") || strings.Contains(line, "lost connection")) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}
