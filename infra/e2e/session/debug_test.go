//go:build e2e

package session

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	"github.com/go-delve/delve/service/rpc2"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// The local ends of Tilt's port-forwards in debug mode (the Tiltfile's
// DEBUG_PORTS) and the server's gRPC forward.
const (
	serverGRPC     = "127.0.0.1:20000"
	serverMetrics  = "127.0.0.1:9000"
	serverDelve    = "127.0.0.1:2345"
	serverPprof    = "127.0.0.1:6060"
	serverPprofUI  = "127.0.0.1:6070"
	clientDelve    = "127.0.0.1:2346"
	clientPprof    = "127.0.0.1:6061"
	loopEdits      = 5 // in each mode, timed with no debugger attached
	attachedEdits  = 3 // then with a debugger of each protocol attached
	echoHandlerSym = "main.(*echoServer).Echo"
	// debugName is the name of the calls the breakpoints stop (their
	// condition): the in-cluster client's ("world") run on.
	debugName = "debug-me"
)

// TestDebugMode runs `tilt up`, makes server edits in the default mode, then
// switches to `--debug server` with tilt args, as a person does, and makes
// 11 more while a terminal opens a new connection to localhost:20000 and
// :9000 every 100ms: 5 timed, then 3 with a debugger on Delve's JSON-RPC API
// (GoLand's), connected once through localhost:2345, has a breakpoint on the
// echo handler at the file and line an IDE sends (the local path, mapped by
// .vscode/launch.json), which stops a call before and after each edit and
// keeps its ID, then 3 with one on DAP (VS Code's), attached once, the
// same. Nothing fails through the forwards, Tilt reports no port-forward
// error, no in-cluster call fails and Delve's memory stays flat; the debug
// loop's time is printed beside the default one's (a figure, not a check).
// Then a CPU profile under load
// through localhost:6060, by hand and by Tilt's button; then, switched with
// tilt args, the client too, through localhost:2346 and 6061.
func TestDebugMode(t *testing.T) {
	// The client at the Tiltfile's default rate: at 60 calls/s its calls
	// would queue at a breakpoint faster than a debugger steps past them.
	s := startTilt(t, 1, 10)
	defaultLoop := s.defaultLoop(t)
	pod, file, line := s.debugServer(t)
	s.debugEdits(t, pod, file, line, defaultLoop)

	cpuProfile(t, s)
	heapProfile(t, s)

	// Both programs, as a person switches while Tilt runs: tilt args
	// replaces every option given before.
	s.SetOptions(t, "--debug", "server", "--debug", "client")
	s.Settle(t, "client-compile", "delve", "client")
	waitDebugged(t, s, "client", true)
	s.Calls = echo.NewCallCounter(t, suite.Cluster, namespace)
	debugClient(t, s)

	// And back: no Delve, the liveness probes back.
	s.SetOptions(t)
	waitDebugged(t, s, "client", false)
	waitDebugged(t, s, "server", false)
	s.Probes["server"] = echo.NewProbes(t, suite.Cluster, namespace, "server")
	s.RestoreServer(t)
}

// defaultLoop times loopEdits server edits in the default mode and returns
// their summary.
func (s *session) defaultLoop(t *testing.T) tiltsession.Summary {
	t.Helper()
	// The default loop is timed as the debug loop is, with the
	// terminal polling the forwards: each forwarded connection costs the
	// API server, the kubelet and the runtime CPU the compile also needs.
	defaultPoll, stopDefaultPoll := s.PollForwards(t, 9000)
	defaultLoop := tiltsession.Summarize(s.EditN(t, "server", loopEdits))
	stopDefaultPoll()
	t.Logf("default loop, %d server edits: through localhost:20000 p50 %.2fs; %d connections through the forwards ok, %d failed", loopEdits, defaultLoop.UserP50.Seconds(), defaultPoll.OK(), defaultPoll.Failed())
	return defaultLoop
}

// debugServer switches the server to debug mode with tilt args, checks its
// pod and waits until Delve runs the debug build. It returns the pod's name
// and the file and line of the breakpoint an IDE sends.
func (s *session) debugServer(t *testing.T) (string, string, int) {
	t.Helper()
	s.SetOptions(t, "--debug", "server")
	s.Settle(t, "server-compile", "delve", "server")
	waitDebugged(t, s, "server", true)
	s.Probes["server"] = echo.NewProbes(t, suite.Cluster, namespace, "server")
	s.Calls = echo.NewCallCounter(t, suite.Cluster, namespace)
	pod := suite.Cluster.MustPods(t, namespace, "server", false, 1)[0]
	for _, r := range kube.RestrictedViolations(t, pod) {
		t.Errorf("debug pod %s: %s", pod.Name, r)
	}
	for _, c := range pod.Spec.Containers {
		if c.LivenessProbe != nil {
			t.Errorf("debug pod %s: container %s has a liveness probe: a breakpoint held longer than it allows gets the program killed", pod.Name, c.Name)
		}
	}
	file, line := breakpointLocation(t, s.Dir)
	t.Logf("breakpoints at %s:%d, as the IDE sends them, for calls named %q", file, line, debugName)
	waitDebugBuild(t, serverDelve, file, line)
	return pod.Name, file, line
}

// debugEdits makes the debug-mode edits on the server pod: loopEdits with no
// debugger attached, then attachedEdits with one on Delve's API and
// attachedEdits with one on DAP, each attached once, while a terminal polls
// the forwards; the debug loop is compared with defaultLoop.
func (s *session) debugEdits(t *testing.T, pod, file string, line int, defaultLoop tiltsession.Summary) {
	t.Helper()
	rss0 := delveRSS(t, pod)
	logBefore := len(s.Proc.Output())
	poll, stopPoll := s.PollForwards(t, 9000)
	var rs []tiltsession.EditResult
	edit := func() {
		r := s.Edit(t, "server")
		rs = append(rs, r)
		t.Logf("debug-mode edit %d: answered through localhost:20000 by the new code in %.2fs; every pod in %.2fs (compile %.2fs, sync %.2fs, drain and restart under Delve to answer %.2fs), %v failed calls",
			len(rs), r.User.Seconds(), r.Total.Seconds(), r.Compile.Seconds(), r.Sync.Seconds(), r.Restart.Seconds(), r.Failed)
	}
	// The loop first, with no debugger attached (a breakpoint's condition,
	// evaluated at every call, would slow what is timed), then with one of
	// each protocol.
	for range loopEdits {
		edit()
	}
	loopRs := slices.Clone(rs)
	api := attachAPI(t, file, line)
	for i := range attachedEdits + 1 {
		api.stopsACall(t, fmt.Sprintf("API, after %d edits", i))
		if i < attachedEdits {
			edit()
		}
	}
	api.detach(t)
	dap := attachDAP(t, file, line)
	for i := range attachedEdits + 1 {
		dap.stopsACall(t, fmt.Sprintf("DAP, after %d edits", i))
		if i < attachedEdits {
			edit()
			dap.toldOfNewBuild(t)
		}
	}
	dap.detach(t)
	stopPoll()
	rss1 := delveRSS(t, pod)

	pfErrors := s.ForwardErrors(logBefore)
	t.Logf("debug-mode edits, seen through the forwards every 100ms: %d connections ok, %d failed, %d port-forward errors in Tilt's log",
		poll.OK(), poll.Failed(), len(pfErrors))
	if n := poll.Failed(); n > 0 || poll.OK() == 0 {
		t.Errorf("%d of %d connections through the forwards failed across %d debug-mode edits, want 0:\n%s", n, n+poll.OK(), len(rs), strings.Join(poll.Failures(), "\n"))
	}
	for _, line := range pfErrors {
		t.Errorf("Tilt's log: %s", line)
	}
	debugLoop := tiltsession.Summarize(loopRs)
	ratio := debugLoop.UserP50.Seconds() / defaultLoop.UserP50.Seconds()
	t.Logf("debug-mode loop, %d server edits with no debugger attached: through localhost:20000 p50 %.2fs, max %.2fs, %.2f times the default loop's %.2fs (compile p50 %.2fs against %.2fs, sync %.2fs against %.2fs, drain and restart to answer %.2fs against the hand-over's %.2fs)",
		len(loopRs), debugLoop.UserP50.Seconds(), debugLoop.UserMax.Seconds(), ratio, defaultLoop.UserP50.Seconds(),
		debugLoop.Compile.Seconds(), defaultLoop.Compile.Seconds(), debugLoop.Sync.Seconds(), defaultLoop.Sync.Seconds(), debugLoop.Restart.Seconds(), defaultLoop.Restart.Seconds())
	all := tiltsession.Summarize(rs)
	t.Logf("Delve's memory (RSS) in the pod: %d MiB before the debug-mode edits, %d MiB after %d", rss0>>20, rss1>>20, len(rs))
	if all.Failed != 0 {
		t.Errorf("%v in-cluster client calls failed across %d debug-mode edits, want 0", all.Failed, len(rs))
	}
	if grew := rss1 - rss0; grew > 60<<20 {
		t.Errorf("Delve's memory grew %d MiB over %d edits, want at most 60", grew>>20, len(rs))
	}
}

// waitDebugged waits until Tilt has rolled program out with (debugged) or
// without Delve, and its pod is ready.
func waitDebugged(t *testing.T, s *session, program string, debugged bool) {
	t.Helper()
	err := kube.Poll(t.Context(), 3*time.Minute, fmt.Sprintf("the %s running under Delve: %v", program, debugged), func(ctx context.Context) (bool, string) {
		if err := suite.Cluster.WaitRollout(ctx, s.Target.Namespace, program, time.Second); err != nil {
			return false, err.Error()
		}
		pods, err := suite.Cluster.RunningPods(ctx, s.Target.Namespace, program)
		if err != nil || len(pods) != 1 || !kube.PodReady(&pods[0]) {
			return false, fmt.Sprintf("%d %s pods, %v", len(pods), program, err)
		}
		c := pods[0].Spec.Containers[0]
		underDelve := slices.Contains(c.Command, "--delve")
		return underDelve == debugged && (c.LivenessProbe == nil) == debugged, fmt.Sprintf("command %v", c.Command)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// delveRSS is the resident memory of Delve in the pod, in bytes.
func delveRSS(t *testing.T, pod string) int64 {
	t.Helper()
	out, stderr, err := suite.Cluster.Exec(t.Context(), namespace, pod, nil, "sh", "-c", `grep VmRSS /proc/$(pidof dlv)/status`)
	var kb int64
	if _, serr := fmt.Sscanf(strings.TrimSpace(out), "VmRSS: %d kB", &kb); err != nil || serr != nil {
		t.Fatalf("Delve's memory in %s: %q %q %v", pod, out, stderr, err)
	}
	return kb << 10
}

// stops it where it makes a call, then detaches: the client calls on.
// Its pprof answers on localhost:6061.
func debugClient(t *testing.T, s *session) {
	t.Helper()
	// Tilt forwards the new pod's ports once it runs, and Delve answers
	// once it has started the client.
	var dlv *rpc2.RPCClient
	err := kube.Poll(t.Context(), time.Minute, "attach to the client's Delve at "+clientDelve+" and halt it", func(context.Context) (bool, string) {
		var err error
		dlv, err = attach(clientDelve)
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	const fn = "main.(*caller).call"
	bp, err := dlv.CreateBreakpoint(&api.Breakpoint{FunctionName: fn})
	if err != nil {
		t.Fatalf("breakpoint on %s: %v", fn, err)
	}
	state := <-dlv.Continue()
	if state.Err != nil || state.CurrentThread == nil || state.CurrentThread.Breakpoint == nil || state.CurrentThread.Breakpoint.ID != bp.ID {
		t.Fatalf("the client did not stop in %s: %+v", fn, state)
	}
	if _, err := dlv.ClearBreakpoint(bp.ID); err != nil {
		t.Fatal(err)
	}
	if err := dlv.Disconnect(true); err != nil {
		t.Fatal(err)
	}
	ok0, _ := s.Calls.Read(t)
	time.Sleep(3 * time.Second)
	if ok1, _ := s.Calls.Read(t); ok1 <= ok0 {
		t.Errorf("the client made no call in the 3s after the debugger detached (%v, then %v)", ok0, ok1)
	}
	resp, err := http.Get("http://" + clientPprof + "/debug/pprof/")
	if err != nil {
		t.Fatalf("the client's pprof at %s: %v", clientPprof, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the client's pprof at %s: %s", clientPprof, resp.Status)
	}
	t.Logf("client: stopped in %s through %s, detached, calling on; pprof on %s", fn, clientDelve, clientPprof)
}
