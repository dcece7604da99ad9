//go:build e2e

package e2e

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

	"example.com/grpc-metrics/infra/proctest"
)

// A Tilt session: `tilt up` in a throwaway copy of the repository (a git
// repository of its own, so every edit is a commit whose hash the new binary
// reports in echo_<program>_build_info), driven through Tilt's CLI and API.

const tiltPort = 10350 // Tilt's API and UI: a second Tilt would fight over the same resources

// tiltSession is `tilt up` in a throwaway copy of the repository.
type tiltSession struct {
	target tiltTarget
	dir    string
	proc   *proctest.Process
	rate   int // the client's calls per second
	edits  int
	// the server's echo.go as copied, which each edit of the server changes
	serverSource []byte
	// probes of each program's pods, through port-forwards.
	probes map[string][]*podProbe
	calls  *callCounter
}

// tiltTarget is where a Tilt session deploys, and how it is reached.
type tiltTarget struct {
	kubeconfig string   // KUBECONFIG of the session; "" for this process's
	ns         string   // the Tiltfile's --namespace
	port       int      // Tilt's web port (tilt up --port)
	offset     int      // the Tiltfile's --port-offset
	options    []string // further Tiltfile options (--allowed-context...)
	// Tiltfile options of tilt up alone, which the first tilt args drops
	// (--local server, to start with).
	upOnly []string
}

// onHost reports whether tilt up runs program on this machine (--local).
func (tt tiltTarget) onHost(program string) bool {
	for i, o := range tt.upOnly {
		if o == "--local" && i+1 < len(tt.upOnly) && tt.upOnly[i+1] == program {
			return true
		}
	}
	return false
}

// defaultTarget is the current kube context, the namespace under test,
// Tilt's default port and no offset.
func defaultTarget() tiltTarget { return tiltTarget{ns: namespace, port: tiltPort} }

// env is the environment of tilt commands of the target.
func (tt tiltTarget) env() []string {
	if tt.kubeconfig == "" {
		return os.Environ()
	}
	return append(os.Environ(), "KUBECONFIG="+tt.kubeconfig)
}

// args are the Tiltfile options of the target, after "--".
func (tt tiltTarget) args(replicas, rate int) []string {
	args := []string{"--", "--client-rate", strconv.Itoa(rate), "--client-concurrency", "4", "--server-replicas", strconv.Itoa(replicas)}
	if tt.ns != "echo" {
		args = append(args, "--namespace", tt.ns)
	}
	if tt.offset != 0 {
		args = append(args, "--port-offset", strconv.Itoa(tt.offset))
	}
	return append(args, tt.options...)
}

// local is the address of a port-forward of the target: localhost, port
// plus the offset.
func (tt tiltTarget) local(port int) string {
	return fmt.Sprintf("127.0.0.1:%d", port+tt.offset)
}

// startTilt copies the repository, starts `tilt up` in the copy with the
// client calling rate times a second, replicas server pods and the Tiltfile
// options options, and waits until every pod runs its build.
func startTilt(t testing.TB, replicas, rate int, options ...string) *tiltSession {
	t.Helper()
	target := defaultTarget()
	target.options = options
	return startTiltAt(t, target, replicas, rate)
}

// startTiltAt is startTilt deploying to target.
func startTiltAt(t testing.TB, target tiltTarget, replicas, rate int) *tiltSession {
	t.Helper()
	if suite.tilt == "" {
		t.Skip("no tilt on PATH: the edit-and-reload loop needs a real Tilt")
	}
	if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", target.port), time.Second); err == nil {
		conn.Close()
		t.Fatalf("something listens on port %d, most likely `tilt up`: stop it first, two Tilts would fight over the same resources", target.port)
	}
	s := &tiltSession{target: target, dir: t.TempDir(), rate: rate, probes: map[string][]*podProbe{}}
	s.copyRepository(t)
	var err error
	if s.serverSource, err = os.ReadFile(filepath.Join(s.dir, editedFile["server"])); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	s.up(t, append(target.args(replicas, rate), target.upOnly...))
	t.Cleanup(func() {
		s.stop(t)
		// Put the suite's own environment back (its server pods, client rate,
		// no debug mode) for the checks that follow.
		if suite.deploy == "tilt" && target.ns == namespace {
			if err := tiltCI(); err != nil {
				t.Error(err)
			}
		}
	})
	s.waitReady(t, 10*time.Minute)
	ctx := t.Context()
	for _, app := range []string{"server", "client"} {
		if target.onHost(app) {
			continue
		}
		if err := suite.c.waitRolloutIn(ctx, target.ns, app, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		s.probes[app] = newProbes(t, target.ns, app)
	}
	t.Logf("tilt up in a copy of the repository, namespace %s, %d server pods: rolled out with its builds in %v", target.ns, replicas, time.Since(began).Round(100*time.Millisecond))
	s.calls = newCallCounter(t, target.ns)
	return s
}

// up starts tilt up in the session's copy with the Tiltfile options args
// ("--" first).
func (s *tiltSession) up(t testing.TB, args []string) {
	t.Helper()
	s.proc = proctest.StartIn(t, s.dir, suite.tilt, s.target.env(), append([]string{"up", "--port", fmt.Sprint(s.target.port), "--stream"}, args...)...)
}

// stop stops Tilt as a person would (Ctrl-C), unless it has stopped
// already; what it deployed stays.
func (s *tiltSession) stop(t testing.TB) {
	t.Helper()
	select {
	case <-s.proc.Done():
		return
	default:
	}
	s.proc.Signal(t, syscall.SIGINT)
	select {
	case <-s.proc.Done():
	case <-time.After(30 * time.Second):
	}
}

// copyRepository copies the files git knows (tracked, and new ones not
// ignored) into s.dir and commits them in a repository of its own.
func (s *tiltSession) copyRepository(t testing.TB) {
	t.Helper()
	out := s.git(t, suite.root, nil, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(strings.TrimRight(out, "\x00"), "\x00") {
		src, dst := filepath.Join(suite.root, f), filepath.Join(s.dir, f)
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
	s.git(t, s.dir, nil, "init", "-q")
	s.git(t, s.dir, nil, "add", "-A")
	s.git(t, s.dir, nil, "commit", "-q", "-m", "copy for the live-update loop")
}

// git runs git in dir with stdin and returns its output.
func (s *tiltSession) git(t testing.TB, dir string, stdin []byte, args ...string) string {
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

// waitReady waits until Tilt's API answers and the server and client
// resources are ready: deployed, with their pods ready.
func (s *tiltSession) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := tiltCommand(s.dir, s.target.env(), "wait", "--for=condition=Ready", "--timeout=1m",
			"uiresource/server", "uiresource/client", "--port", fmt.Sprint(s.target.port))
		if err == nil {
			return
		}
		select {
		case <-s.proc.Done():
			t.Fatalf("tilt up exited: %v", s.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tilt wait: %v\n%s", err, out)
		}
		time.Sleep(time.Second) // Tilt's API is not up yet, or the resources not registered
	}
}

// tilt runs a tilt command against the session's Tilt and returns its output.
// The first argument is the subcommand; Tiltfile options may follow "--".
func (s *tiltSession) tilt(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := tiltCommand(s.dir, s.target.env(), append([]string{args[0], "--port", fmt.Sprint(s.target.port)}, args[1:]...)...)
	if err != nil {
		t.Fatalf("tilt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return []byte(out)
}

// setOptions changes the Tiltfile options while Tilt runs, as a person does
// with tilt args, which replaces every option given before: the session's
// own, then extra.
func (s *tiltSession) setOptions(t testing.TB, extra ...string) {
	t.Helper()
	s.tilt(t, append(append([]string{"args"}, s.target.args(1, s.rate)...), extra...)...)
}

// tiltCommand runs tilt with args in dir with the environment env, and
// returns its output.
func tiltCommand(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command(suite.tilt, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tiltCI runs `tilt ci` in the repository and prints how long it took.
func tiltCI() error {
	began := time.Now()
	// Two server pods, as in infra/base: the faults need a second one.
	cmd := exec.Command(suite.tilt, append([]string{"ci", "--timeout", "10m"}, defaultTarget().args(2, suite.rate)...)...)
	cmd.Dir = suite.root
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tilt ci: %w", err)
	}
	fmt.Printf("e2e: tilt ci: every resource ready in %v\n", time.Since(began).Round(100*time.Millisecond))
	return nil
}

// tiltDown runs tilt down for target, with its options, deleting its
// namespace too.
func tiltDown(t *testing.T, target tiltTarget) {
	t.Helper()
	out, err := tiltCommand(suite.root, target.env(), append([]string{"down", "--delete-namespaces"}, target.args(1, 10)...)...)
	if err != nil {
		t.Errorf("tilt down of %s: %v\n%s", target.ns, err, tail(out))
	}
}

// tail is the end of a long output.
func tail(out string) string {
	if len(out) > 4000 {
		return "..." + out[len(out)-4000:]
	}
	return out
}

// commitAndWrite makes content the new version of path: first a commit in
// the copy's repository (without touching the work tree, which Tilt
// watches), then the file itself, so the build it triggers reports that
// commit as its revision. It returns the commit hash.
func (s *tiltSession) commitAndWrite(t testing.TB, path string, content []byte) string {
	t.Helper()
	blob := strings.TrimSpace(s.git(t, s.dir, content, "hash-object", "-w", "--stdin"))
	s.git(t, s.dir, nil, "update-index", "--add", "--cacheinfo", "100644,"+blob+","+path)
	tree := strings.TrimSpace(s.git(t, s.dir, nil, "write-tree"))
	commit := strings.TrimSpace(s.git(t, s.dir, nil, "commit-tree", tree, "-p", "HEAD", "-m", "edit "+path))
	s.git(t, s.dir, nil, "update-ref", "HEAD", commit)
	if err := os.WriteFile(filepath.Join(s.dir, path), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return commit
}

// buildRecord is one entry of a Tilt resource's build history.
type buildRecord struct {
	Start  time.Time `json:"startTime"`
	Finish time.Time `json:"finishTime"`
	Error  string    `json:"error"`
}

// resource is the part of a Tilt UIResource these checks read.
type resource struct {
	Status struct {
		BuildHistory []buildRecord `json:"buildHistory"`
		UpdateStatus string        `json:"updateStatus"`
		CurrentBuild struct {
			StartTime string `json:"startTime"`
		} `json:"currentBuild"`
		PendingBuildSince string `json:"pendingBuildSince"`
	} `json:"status"`
}

// idle reports whether the resource builds nothing and has nothing to build.
func (r resource) idle() bool {
	return r.Status.CurrentBuild.StartTime == "" && r.Status.PendingBuildSince == ""
}

// settle waits until the resources named build nothing, for a second in a
// row: after a change of options, Tilt may build an image from the binary
// the previous options compiled, then live-update the new one.
func (s *tiltSession) settle(t testing.TB, names ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	quietSince := time.Now()
	for time.Since(quietSince) < time.Second {
		for _, n := range names {
			// One the new options bring may not exist yet.
			out, err := tiltCommand(s.dir, s.target.env(), "get", "uiresource", n, "-o", "json", "--port", fmt.Sprint(s.target.port))
			var r resource
			if err != nil || json.Unmarshal([]byte(out), &r) != nil || !r.idle() {
				quietSince = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still build after 3 minutes", names)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *tiltSession) resource(t testing.TB, name string) resource {
	t.Helper()
	var r resource
	if err := json.Unmarshal(s.tilt(t, "get", "uiresource", name, "-o", "json"), &r); err != nil {
		t.Fatalf("tilt get uiresource %s: %v", name, err)
	}
	return r
}

// buildAfter returns the newest build of resource name that started after
// since and has finished, if any.
func (s *tiltSession) buildAfter(t testing.TB, name string, since time.Time) (buildRecord, bool) {
	t.Helper()
	for _, b := range s.resource(t, name).Status.BuildHistory {
		if b.Start.After(since) && !b.Finish.IsZero() {
			return b, true
		}
	}
	return buildRecord{}, false
}

// clickButton clicks a button of the Tilt UI as the web UI does: it sets the
// time of the last click in the status of the UIButton, through the API
// server of the session's Tilt (its kubeconfig is in Tilt's own directory).
func (s *tiltSession) clickButton(t *testing.T, name string) {
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
	if s.target.port != 10350 {
		apiServer = fmt.Sprintf("tilt-%d", s.target.port)
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

// pollForwards opens a new connection to Tilt's forwards of the server's
// gRPC port and of metricsPorts every 100ms, as a person at a terminal does,
// until stop is called.
func (s *tiltSession) pollForwards(t testing.TB, metricsPorts ...int) (p *proctest.Poller, stop func()) {
	p = new(proctest.Poller)
	var metrics []string
	for _, port := range metricsPorts {
		metrics = append(metrics, s.target.local(port))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, 100*time.Millisecond, s.target.local(20000), metrics...) })
	return p, func() { cancel(); wg.Wait() }
}

// forwardErrors returns the lines of Tilt's log, from byte from on, that tell
// of a port-forward's error or lost connection.
func (s *tiltSession) forwardErrors(from int) []string {
	var lines []string
	for line := range strings.Lines(s.proc.Output()[from:]) {
		if strings.Contains(line, "port-forward") && (strings.Contains(line, "rror") || strings.Contains(line, "lost connection")) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}
