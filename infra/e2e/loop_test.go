//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/proctest"
)

// The edit-and-reload loop under a real Tilt: `tilt up` runs in a throwaway
// copy of the repository (a git repository of its own, so every edit is a
// commit whose hash the new binary reports in echo_<program>_build_info),
// edits are made there, and each is timed from the moment the file is
// written until every pod of the program runs the new code and answers.

const (
	tiltPort    = 10350            // Tilt's API and UI: a second Tilt would fight over the same resources
	editTimeout = 60 * time.Second // for one edit to reach every pod
	settle      = time.Second      // between edits, and before counting failed calls
	// userPoll spaces the calls through a port-forward that wait for an
	// edit's new code once its process has started.
	userPoll = 10 * time.Millisecond
)

// editedFile is the file each program's edits change.
var editedFile = map[string]string{
	"server": "services/server/echo.go",
	"client": "services/client/caller.go",
}

// replyLine is the line of the echo handler that an edit of the server
// changes, so that a call shows which build answered it.
const replyLine = "return &foopb.EchoReply{Message: name}, nil"

// editReply returns the server's echo.go whose echo replies with the name
// followed by " (edit n)".
func editReply(t testing.TB, original []byte, n int) []byte {
	t.Helper()
	if !bytes.Contains(original, []byte(replyLine)) {
		t.Fatalf("%s has no line %q to edit", editedFile["server"], replyLine)
	}
	return bytes.Replace(original, []byte(replyLine),
		fmt.Appendf(nil, "return &foopb.EchoReply{Message: name + %q}, nil", fmt.Sprintf(" (edit %d)", n)), 1)
}

// userCall is what a person does after a save: echo through Tilt's
// forward of localhost:20000 (plus the offset), on a new connection, as
// grpcurl does.
func (s *tiltSession) userCall(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return echoWait(ctx, s.target.local(20000), name)
}

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
	args := append([]string{"up", "--port", fmt.Sprint(target.port), "--stream"}, target.args(replicas, rate)...)
	s.proc = proctest.StartIn(t, s.dir, suite.tilt, target.env(), args...)
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
		if err := suite.c.waitRolloutIn(ctx, target.ns, app, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("tilt up in a copy of the repository, namespace %s, %d server pods: rolled out with its builds in %v", target.ns, replicas, time.Since(began).Round(100*time.Millisecond))
	s.probes["server"] = newProbes(t, target.ns, "server")
	s.probes["client"] = newProbes(t, target.ns, "client")
	s.calls = newCallCounter(t, target.ns)
	return s
}

// restoreServer makes the server's code the one the session started with
// again, after edits that changed its reply, and waits until it answers:
// the last step of a check that edits, so the environment is left with the
// code it had.
func (s *tiltSession) restoreServer(t testing.TB) {
	t.Helper()
	path := filepath.Join(s.dir, editedFile["server"])
	current, err := os.ReadFile(path)
	if err != nil || bytes.Equal(current, s.serverSource) || t.Failed() {
		return
	}
	select {
	case <-s.proc.Done():
		return
	default:
	}
	// The pods may have been replaced since the probes were made (options
	// changed with tilt args).
	if err := suite.c.waitRolloutIn(t.Context(), s.target.ns, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	s.probes["server"] = newProbes(t, s.target.ns, "server")
	began := time.Now()
	rev := s.commitAndWrite(t, editedFile["server"], s.serverSource)
	s.waitForRevision(t, "server", rev, began)
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
	} `json:"status"`
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

// podProbe follows one pod: its log, for the start of each process and the
// revision it runs (cheap, and at once), and its metrics through a
// port-forward, for whether that process answers. It opens no connection to
// the program's gRPC port: a connection through a port-forward lingers in
// the pod for about a second after it is closed, and the server's graceful
// stop would wait for it.
type podProbe struct {
	ns, pod string
	metrics string // the pod's port 9000

	mu      sync.Mutex
	serving map[string]bool // revisions whose process logged that it serves
}

// started reports whether a process of revision rev has logged that it serves.
func (p *podProbe) started(rev string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving[rev]
}

func newProbes(t testing.TB, ns, app string) []*podProbe {
	t.Helper()
	pods, err := suite.c.runningPodsIn(t.Context(), ns, app)
	if err != nil || len(pods) == 0 {
		t.Fatalf("no running %s pod in %s (%v)", app, ns, err)
	}
	var out []*podProbe
	for _, p := range pods {
		pp := &podProbe{ns: ns, pod: p.Name, metrics: suite.c.portForwardIn(t, ns, p.Name, 9000).addr[9000], serving: map[string]bool{}}
		pp.follow(t)
		out = append(out, pp)
	}
	return out
}

// follow streams the pod's log from now on and reports each process that
// logs "serving" (the server) or "calling echo" (the client), with the
// revision of its "starting" line.
func (p *podProbe) follow(t testing.TB) {
	t.Helper()
	now := metav1.Now()
	stream, err := suite.c.client.CoreV1().Pods(p.ns).GetLogs(p.pod, &corev1.PodLogOptions{Follow: true, SinceTime: &now}).Stream(t.Context())
	if err != nil {
		t.Fatalf("follow the log of %s: %v", p.pod, err)
	}
	t.Cleanup(func() { stream.Close() })
	go func() {
		sc := bufio.NewScanner(stream)
		sc.Buffer(nil, 1<<20)
		revision := ""
		for sc.Scan() {
			var line struct {
				Msg      string `json:"msg"`
				Revision string `json:"revision"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line.Msg {
			case "starting":
				revision = line.Revision
			case "serving", "calling echo":
				p.mu.Lock()
				p.serving[revision] = true
				p.mu.Unlock()
			}
		}
	}()
}

// state returns the revision the pod's program reports and whether that
// process answers: the server has answered a call of the client since it
// started, the client has made a successful call.
func (p *podProbe) state(program string) (revision string, answering bool) {
	mfs, err := proctest.Scrape("http://" + p.metrics + "/metrics")
	if err != nil {
		return "", false
	}
	for _, m := range mfs["echo_"+program+"_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "revision" {
				revision = l.GetValue()
			}
		}
	}
	if program == "server" {
		return revision, answered(mfs) >= 1
	}
	return revision, proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}) >= 1
}

// answered is the server's count of echo calls it answered, in a scrape.
func answered(mfs map[string]*dto.MetricFamily) float64 {
	return proctest.Value(mfs, "echo_requests_total", map[string]string{"result": "ok"})
}

// answeredCalls scrapes a server's metrics at url for its count of answered
// echo calls.
func answeredCalls(url string) (float64, error) {
	mfs, err := proctest.Scrape(url)
	if err != nil {
		return 0, err
	}
	return answered(mfs), nil
}

// callCounter reads the client's echo_client_calls_total through a
// port-forward to its pod.
type callCounter struct {
	pod, url string
}

func newCallCounter(t testing.TB, ns string) *callCounter {
	t.Helper()
	pods, err := suite.c.runningPodsIn(t.Context(), ns, "client")
	if err != nil || len(pods) != 1 {
		t.Fatalf("want one running client pod in %s, have %d (%v)", ns, len(pods), err)
	}
	fwd := suite.c.portForwardIn(t, ns, pods[0].Name, 9000)
	return &callCounter{pod: pods[0].Name, url: "http://" + fwd.addr[9000] + "/metrics"}
}

// read returns the calls that succeeded and failed so far.
func (c *callCounter) read(t testing.TB) (ok, failed float64) {
	t.Helper()
	var err error
	for range 20 { // the client may be restarting
		mfs, serr := proctest.Scrape(c.url)
		if err = serr; err == nil {
			return proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}),
				proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "error"})
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("client pod %s: %v", c.pod, err)
	return 0, 0
}

// editResult is one timed edit.
type editResult struct {
	user    time.Duration // server edits: file written -> a call through localhost:20000 answered by the new build
	refused int           // server edits: calls through localhost:20000 that failed while polling for the new build
	total   time.Duration // file written -> every pod answers with the new build
	detect  time.Duration // file written -> compile starts (Tilt's file watch)
	compile time.Duration // scripts/build
	handoff time.Duration // compile done -> live update starts (negative: it starts before the compile resource ends)
	sync    time.Duration // live update: copy to every pod, restart signalled
	restart time.Duration // live update done -> every pod's new process answers
	failed  float64       // client calls failed during the edit
}

// edit makes one edit of program and times it.
func (s *tiltSession) edit(t testing.TB, program string) editResult {
	t.Helper()
	path := editedFile[program]
	original, err := os.ReadFile(filepath.Join(s.dir, path))
	if err != nil {
		t.Fatal(err)
	}
	s.edits++
	content := fmt.Appendf(original, "\n// live-update loop edit %d\n", s.edits)
	var failed0 float64
	logBefore := len(s.proc.Output())
	var r editResult
	var want string
	if program == "server" {
		content = editReply(t, s.serverSource, s.edits)
		want = fmt.Sprintf("user (edit %d)", s.edits)
		_, failed0 = s.calls.read(t)
		// A call through the forward right before the save, as a person
		// checking the previous edit makes.
		if _, err := s.userCall("user"); err != nil {
			t.Fatalf("a call through %s before edit %d: %v", s.target.local(20000), s.edits, err)
		}
	}
	began := time.Now()
	rev := s.commitAndWrite(t, path, content)
	if program == "server" {
		// Calls through the forward begin once a server process of this
		// revision logs that it serves: each costs the API server, the
		// kubelet and the container runtime CPU that the compile of the edit
		// also needs, so calls made all along would slow what they time.
		for !slices.ContainsFunc(s.probes["server"], func(p *podProbe) bool { return p.started(rev) }) {
			if time.Since(began) > editTimeout {
				t.Fatalf("edit %d: no server process of revision %.8s serves within %v", s.edits, rev, editTimeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for {
			reply, err := s.userCall("user")
			if reply == want {
				r.user = time.Since(began)
				break
			}
			if err != nil {
				r.refused++
			}
			if time.Since(began) > editTimeout {
				t.Fatalf("edit %d: no answer %q through %s within %v (last: %q, %v)", s.edits, want, s.target.local(20000), editTimeout, reply, err)
			}
			time.Sleep(userPoll)
		}
	}
	r.total = s.waitForRevision(t, program, rev, began)
	time.Sleep(settle)
	if program == "server" {
		_, failed1 := s.calls.read(t)
		r.failed = failed1 - failed0
	} else {
		// The client itself restarted: count its failure log lines instead.
		r.failed = float64(strings.Count(s.proc.Output()[logBefore:], `"msg":"echo failed"`))
	}
	// Tilt sees the new binary, and starts the live update, while the compile
	// resource is still finishing: the hand-off may be negative.
	if compile, ok := s.buildAfter(t, program+"-compile", began); ok {
		r.detect, r.compile = compile.Start.Sub(began), compile.Finish.Sub(compile.Start)
		if lu, ok := s.buildAfter(t, program, compile.Start); ok {
			r.handoff, r.sync, r.restart = lu.Start.Sub(compile.Finish), lu.Finish.Sub(lu.Start), began.Add(r.total).Sub(lu.Finish)
		}
	}
	return r
}

// waitForRevision waits until every pod of program runs rev and its new
// process has answered; it returns the time from began. The log tells when
// the process serves; the metrics, polled from then on, when it answered.
func (s *tiltSession) waitForRevision(t testing.TB, program, rev string, began time.Time) time.Duration {
	t.Helper()
	probes := s.probes[program]
	done := map[*podProbe]time.Time{}
	for len(done) < len(probes) {
		for _, p := range probes {
			if _, ok := done[p]; ok {
				continue
			}
			if !p.started(rev) {
				continue
			}
			if got, answering := p.state(program); got == rev && answering {
				done[p] = time.Now()
			}
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("%s: revision %.8s not answering on every pod within %v (answering: %d of %d)",
				program, rev, editTimeout, len(done), len(probes))
		}
		time.Sleep(25 * time.Millisecond)
	}
	var last time.Time
	for _, at := range done {
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(began)
}

// brokenEdit writes a server file that does not compile, checks that Tilt
// reports the error on server-compile while the pods keep the previous build
// and keep answering with no failed call, then fixes the file and times the
// recovery like an edit.
func (s *tiltSession) brokenEdit(t testing.TB) (broken time.Duration, failed float64, fix editResult) {
	t.Helper()
	path := editedFile["server"]
	original, err := os.ReadFile(filepath.Join(s.dir, path))
	if err != nil {
		t.Fatal(err)
	}
	revBefore := map[string]string{}
	for _, p := range s.probes["server"] {
		revBefore[p.pod], _ = p.state("server")
	}
	_, failed0 := s.calls.read(t)
	began := time.Now()
	if err := os.WriteFile(filepath.Join(s.dir, path), append(slices.Clone(original), "\nfunc broken( {\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	var build buildRecord
	for {
		var ok bool
		if build, ok = s.buildAfter(t, "server-compile", began); ok {
			break
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("server-compile did not build the broken edit within %v", editTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if build.Error == "" {
		t.Errorf("server-compile built a file that does not compile without an error")
	}
	if st := s.resource(t, "server-compile").Status.UpdateStatus; st != "error" {
		t.Errorf("server-compile update status %q, want error (shown red in the UI)", st)
	}
	if !strings.Contains(s.proc.Output(), "syntax error") {
		t.Error("the compiler's error is not in Tilt's log")
	}
	// While broken: the pods keep the previous build and keep answering.
	for range 5 {
		time.Sleep(2 * time.Second)
		for _, p := range s.probes["server"] {
			rev, answering := p.state("server")
			if rev != revBefore[p.pod] || !answering {
				t.Errorf("pod %s while the edit is broken: revision %.8s (was %.8s), answering %v", p.pod, rev, revBefore[p.pod], answering)
			}
		}
	}
	_, failed1 := s.calls.read(t)
	broken = time.Since(began)
	// Fixing the file resumes the loop.
	if err := os.WriteFile(filepath.Join(s.dir, path), original, 0o644); err != nil {
		t.Fatal(err)
	}
	fix = s.edit(t, "server")
	return broken, failed1 - failed0, fix
}

// summary is the p50 and max of the edits' times and their failed calls.
type summary struct {
	userP50, userMax                        time.Duration // server edits: as a person calling through localhost:20000 sees it
	refused                                 int
	p50, max                                time.Duration
	detect, compile, handoff, sync, restart time.Duration // medians
	failed                                  float64
}

func summarize(rs []editResult) summary {
	med := func(f func(editResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	var s summary
	for _, r := range rs {
		s.max = max(s.max, r.total)
		s.userMax = max(s.userMax, r.user)
		s.refused += r.refused
		s.failed += r.failed
	}
	s.userP50 = med(func(r editResult) time.Duration { return r.user })
	s.p50 = med(func(r editResult) time.Duration { return r.total })
	s.detect = med(func(r editResult) time.Duration { return r.detect })
	s.compile = med(func(r editResult) time.Duration { return r.compile })
	s.handoff = med(func(r editResult) time.Duration { return r.handoff })
	s.sync = med(func(r editResult) time.Duration { return r.sync })
	s.restart = med(func(r editResult) time.Duration { return r.restart })
	return s
}

// loop runs the edits of one program, one per b.Loop iteration, and reports
// the figures.
func loop(b *testing.B, s *tiltSession, program string) {
	var rs []editResult
	for b.Loop() {
		r := s.edit(b, program)
		rs = append(rs, r)
		b.Logf("%s edit %2d: %6.2fs  (watch %.2fs, compile %.2fs, hand-off %.2fs, sync %.2fs, restart to answer %.2fs), %v failed calls; through localhost:20000 %.2fs (%d calls failed while polling)",
			program, len(rs), r.total.Seconds(), r.detect.Seconds(), r.compile.Seconds(), r.handoff.Seconds(), r.sync.Seconds(), r.restart.Seconds(), r.failed, r.user.Seconds(), r.refused)
	}
	sum := summarize(rs)
	if program == "server" {
		b.ReportMetric(sum.userP50.Seconds(), "user-p50-s")
		b.ReportMetric(sum.userMax.Seconds(), "user-max-s")
		b.ReportMetric(float64(sum.refused), "polls-failed")
	}
	b.ReportMetric(sum.p50.Seconds(), "p50-s")
	b.ReportMetric(sum.max.Seconds(), "max-s")
	b.ReportMetric(sum.failed, "failed-calls")
	b.ReportMetric(sum.compile.Seconds(), "compile-p50-s")
	b.ReportMetric(sum.sync.Seconds(), "sync-p50-s")
	b.ReportMetric(sum.restart.Seconds(), "restart-p50-s")
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
	s := startTilt(b, replicas, suite.rate)
	b.Run("server", func(b *testing.B) { loop(b, s, "server") })
	b.Run("client", func(b *testing.B) { loop(b, s, "client") })
	broken, failed, fix := s.brokenEdit(b)
	s.restoreServer(b)
	b.Logf("broken edit: error on server-compile, pods kept the previous build and answered for %.1fs, %v calls failed; after the fix, new code answering in %.2fs (%v failed)",
		broken.Seconds(), failed, fix.total.Seconds(), fix.failed)
	if failed+fix.failed != 0 {
		b.Errorf("%v calls failed during and after the broken edit, want 0", failed+fix.failed)
	}
}
