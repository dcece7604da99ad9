//go:build e2e

package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	"github.com/go-delve/delve/service/dap/daptest"
	"github.com/go-delve/delve/service/rpc2"
	"github.com/google/go-dap"
	"github.com/google/pprof/profile"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
	"example.com/grpc-metrics/infra/proctest"
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
	// The default loop is timed as the debug loop below is, with the
	// terminal polling the forwards: each forwarded connection costs the
	// API server, the kubelet and the runtime CPU the compile also needs.
	defaultPoll, stopDefaultPoll := s.PollForwards(t, 9000)
	defaultLoop := tiltsession.Summarize(s.EditN(t, "server", loopEdits))
	stopDefaultPoll()
	t.Logf("default loop, %d server edits: through localhost:20000 p50 %.2fs; %d connections through the forwards ok, %d failed", loopEdits, defaultLoop.UserP50.Seconds(), defaultPoll.OK(), defaultPoll.Failed())

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

	rss0 := delveRSS(t, pod.Name)
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
	rss1 := delveRSS(t, pod.Name)

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

// apiDebugger is a debugger on Delve's JSON-RPC API through Tilt's forward,
// connected once, with a breakpoint on the echo handler for calls named
// debugName.
type apiDebugger struct {
	c   *rpc2.RPCClient
	bp  *api.Breakpoint
	run <-chan *api.DebuggerState // the pending continue
}

func attachAPI(t *testing.T, file string, line int) *apiDebugger {
	t.Helper()
	c, err := attach(serverDelve)
	if err != nil {
		t.Fatalf("attach to Delve at %s and halt: %v", serverDelve, err)
	}
	bp, err := c.CreateBreakpoint(&api.Breakpoint{File: file, Line: line, Cond: fmt.Sprintf("req.Name == %q", debugName)})
	if err != nil {
		t.Fatalf("breakpoint at %s:%d: %v", file, line, err)
	}
	if len(bp.Addrs) == 0 || bp.FunctionName != echoHandlerSym {
		t.Fatalf("breakpoint at %s:%d bound to %q at %d addresses, want %s", file, line, bp.FunctionName, len(bp.Addrs), echoHandlerSym)
	}
	return &apiDebugger{c: c, bp: bp, run: c.Continue()}
}

// stopsACall calls echo through localhost:20000: the call must stop at the
// breakpoint, the same one, with its name among the handler's arguments,
// and be answered once the debugger continues.
func (d *apiDebugger) stopsACall(t *testing.T, when string) {
	t.Helper()
	answered := callInBackground(debugName)
	select {
	case st := <-d.run:
		if st.Err != nil || st.CurrentThread == nil || st.CurrentThread.Breakpoint == nil || st.CurrentThread.Breakpoint.ID != d.bp.ID {
			t.Fatalf("%s: the call did not stop at breakpoint %d: %+v", when, d.bp.ID, st)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s: no stop at the breakpoint within a minute", when)
	}
	args, err := d.c.ListFunctionArgs(api.EvalScope{GoroutineID: -1}, api.LoadConfig{FollowPointers: true, MaxVariableRecurse: 2, MaxStringLen: 256, MaxStructFields: -1})
	if err != nil || !hasStringField(args, "Name", debugName) {
		t.Fatalf("%s: the handler's arguments %+v (%v), want the name %q among them", when, args, err, debugName)
	}
	d.run = d.c.Continue()
	if err := <-answered; err != nil {
		t.Fatalf("%s: the call stopped at the breakpoint: %v", when, err)
	}
}

// detach clears the breakpoint and leaves the program running.
func (d *apiDebugger) detach(t *testing.T) {
	t.Helper()
	if _, err := d.c.Halt(); err != nil {
		t.Fatal(err)
	}
	<-d.run
	bps, err := d.c.ListBreakpoints(false)
	if err != nil || !slices.ContainsFunc(bps, func(b *api.Breakpoint) bool { return b.ID == d.bp.ID }) {
		t.Fatalf("breakpoint %d is gone after the edits: %v (%v)", d.bp.ID, bps, err)
	}
	if _, err := d.c.ClearBreakpoint(d.bp.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.c.Disconnect(true); err != nil {
		t.Fatal(err)
	}
}

// dapDebugger is VS Code's Go extension attached through Tilt's forward:
// DAP, "mode": "remote", connected once.
type dapDebugger struct {
	c    *daptest.Client
	file string
	id   int // the breakpoint's
}

func attachDAP(t *testing.T, file string, line int) *dapDebugger {
	t.Helper()
	c := daptest.NewClient(serverDelve)
	t.Cleanup(c.Close)
	c.InitializeRequest()
	proctest.ExpectDAP[*dap.InitializeResponse](t, c)
	c.AttachRequest(map[string]any{"mode": "remote", "request": "attach"})
	proctest.ExpectDAP[*dap.AttachResponse](t, c)
	c.SetBreakpointsRequestWithArgs(file, []int{line}, map[int]string{line: fmt.Sprintf("req.Name == %q", debugName)}, nil, nil)
	set := proctest.ExpectDAP[*dap.SetBreakpointsResponse](t, c)
	if len(set.Body.Breakpoints) != 1 || !set.Body.Breakpoints[0].Verified {
		t.Fatalf("breakpoint at %s:%d: %+v", file, line, set.Body.Breakpoints)
	}
	c.ConfigurationDoneRequest()
	proctest.ExpectDAP[*dap.ConfigurationDoneResponse](t, c)
	return &dapDebugger{c: c, file: file, id: set.Body.Breakpoints[0].Id}
}

func (d *dapDebugger) stopsACall(t *testing.T, when string) {
	t.Helper()
	answered := callInBackground(debugName)
	stopped := proctest.ExpectDAP[*dap.StoppedEvent](t, d.c)
	if stopped.Body.Reason != "breakpoint" || !slices.Contains(stopped.Body.HitBreakpointIds, d.id) {
		t.Fatalf("%s: stopped %+v, want at breakpoint %d", when, stopped.Body, d.id)
	}
	d.c.ContinueRequest(stopped.Body.ThreadId)
	proctest.ExpectDAP[*dap.ContinueResponse](t, d.c)
	if err := <-answered; err != nil {
		t.Fatalf("%s: the call stopped at the breakpoint: %v", when, err)
	}
}

// toldOfNewBuild reads the debug console's line that a new build runs.
func (d *dapDebugger) toldOfNewBuild(t *testing.T) {
	t.Helper()
	for out := proctest.ExpectDAP[*dap.OutputEvent](t, d.c); !strings.Contains(out.Body.Output, "A new build of the program runs"); {
		out = proctest.ExpectDAP[*dap.OutputEvent](t, d.c)
	}
}

// detach clears the breakpoint and disconnects, leaving the program
// running, as VS Code's stop button does on an attached session.
func (d *dapDebugger) detach(t *testing.T) {
	t.Helper()
	d.c.SetBreakpointsRequest(d.file, nil)
	proctest.ExpectDAP[*dap.SetBreakpointsResponse](t, d.c)
	d.c.DisconnectRequest()
	proctest.ExpectDAP[*dap.DisconnectResponse](t, d.c)
}

// callInBackground calls echo with name through localhost:20000; the call's
// error, or one about its reply, comes on the channel.
func callInBackground(name string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		reply, err := echo.EchoWait(ctx, serverGRPC, name)
		if err == nil && !strings.HasPrefix(reply, name) {
			err = fmt.Errorf("reply %q, want %q first", reply, name)
		}
		done <- err
	}()
	return done
}

// debugClient attaches to the client's Delve through localhost:2346 and
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

// launchConfig is the part of a VS Code debug configuration read here.
type launchConfig struct {
	Name           string `json:"name"`
	Request        string `json:"request"`
	Mode           string `json:"mode"`
	Host           string `json:"host"`
	Port           int    `json:"port"`
	SubstitutePath []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"substitutePath"`
}

// breakpointLocation is where an IDE puts a breakpoint on the first
// statement of the echo handler, opened from the workspace dir: the local
// path of services/server/echo.go with the substitutePath rules of the
// "Attach to server" configuration of .vscode/launch.json applied, as the Go
// extension does before it sends the breakpoint to Delve.
func breakpointLocation(t *testing.T, dir string) (string, int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ".vscode", "launch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var launch struct {
		Configurations []launchConfig `json:"configurations"`
	}
	if err := json.Unmarshal(data, &launch); err != nil {
		t.Fatalf(".vscode/launch.json: %v", err)
	}
	i := slices.IndexFunc(launch.Configurations, func(c launchConfig) bool { return strings.Contains(c.Name, "server") })
	if i < 0 {
		t.Fatal(".vscode/launch.json has no configuration for the server")
	}
	cfg := launch.Configurations[i]
	if got := net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)); cfg.Request != "attach" || cfg.Mode != "remote" || got != serverDelve {
		t.Fatalf("launch.json %q: %s/%s to %s, want attach/remote to %s", cfg.Name, cfg.Request, cfg.Mode, got, serverDelve)
	}

	local := filepath.Join(dir, "services", "server", "echo.go")
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, local, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	line := 0
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Echo" && fd.Recv != nil && len(fd.Body.List) > 0 {
			line = fset.Position(fd.Body.List[0].Pos()).Line
		}
	}
	if line == 0 {
		t.Fatal("no echo.Echo method with a body in services/server/echo.go")
	}
	remote := local
	for _, r := range cfg.SubstitutePath {
		from := strings.ReplaceAll(r.From, "${workspaceFolder}", dir)
		if strings.HasPrefix(remote, from) {
			remote = strings.ReplaceAll(r.To, "${workspaceFolder}", dir) + strings.TrimPrefix(remote, from)
			break
		}
	}
	return remote, line
}

// debugCall attaches to the server's Delve, sets a breakpoint at file:line,
// and calls echo with name through localhost:20000: the call must stop
// there (the in-cluster client's calls stop there too and are let go), with
// name among the handler's arguments. It clears the breakpoint, detaches
// leaving the program running, and the call must then be answered want. The
// in-cluster client may lose only the calls the breakpoint held, and none
// once the debugger is gone.
func debugCall(t *testing.T, s *session, file string, line int, name, want string) {
	t.Helper()
	_, failed0 := s.Calls.Read(t)
	dlv, err := attach(serverDelve)
	if err != nil {
		t.Fatalf("attach to Delve at %s and halt: %v", serverDelve, err)
	}
	halted := time.Now()
	bp, err := dlv.CreateBreakpoint(&api.Breakpoint{File: file, Line: line})
	if err != nil {
		t.Fatalf("breakpoint at %s:%d: %v", file, line, err)
	}
	if len(bp.Addrs) == 0 || bp.FunctionName != echoHandlerSym {
		t.Fatalf("breakpoint at %s:%d bound to %q at %d addresses, want %s", file, line, bp.FunctionName, len(bp.Addrs), echoHandlerSym)
	}

	type answer struct {
		reply string
		err   error
	}
	answered := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		reply, err := echo.EchoWait(ctx, serverGRPC, name)
		answered <- answer{reply, err}
	}()

	stops := 0
	for found := false; !found; {
		state := <-dlv.Continue()
		if state.Err != nil || state.Exited {
			t.Fatalf("continue: %v (exited %v)", state.Err, state.Exited)
		}
		if th := state.CurrentThread; th == nil || th.Breakpoint == nil || th.Breakpoint.ID != bp.ID {
			t.Fatalf("stopped, but not at the breakpoint: %+v", state.CurrentThread)
		}
		stops++
		args, err := dlv.ListFunctionArgs(api.EvalScope{GoroutineID: -1}, api.LoadConfig{FollowPointers: true, MaxVariableRecurse: 2, MaxStringLen: 256, MaxStructFields: -1})
		if err != nil {
			t.Fatalf("the handler's arguments: %v", err)
		}
		found = hasStringField(args, "Name", name)
		if time.Since(halted) > time.Minute {
			t.Fatalf("%d stops at the breakpoint in %v, none for the call named %q", stops, time.Since(halted).Round(time.Second), name)
		}
	}
	if _, err := dlv.ClearBreakpoint(bp.ID); err != nil {
		t.Fatalf("clear the breakpoint: %v", err)
	}
	if err := dlv.Disconnect(true); err != nil {
		t.Fatalf("detach, leaving the program running: %v", err)
	}
	held := time.Since(halted)
	select {
	case a := <-answered:
		if a.err != nil || a.reply != want {
			t.Fatalf("the call stopped at the breakpoint: %q, %v; want %q", a.reply, a.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call stopped at the breakpoint was not answered within 10s of the detach")
	}
	// The client's calls held while the process was stopped time out within
	// their deadline (1s); after that, none may fail.
	time.Sleep(1500 * time.Millisecond)
	_, failed1 := s.Calls.Read(t)
	time.Sleep(5 * time.Second)
	_, failed2 := s.Calls.Read(t)
	heldCalls := float64(s.Rate)*(held.Seconds()+1) + 4
	t.Logf("%s: stopped at the breakpoint %d times (the in-cluster client's calls too), process held %.1fs; client calls failed: %v while held (at most %.0f could be), %v in the 5s after the detach",
		name, stops, held.Seconds(), failed1-failed0, heldCalls, failed2-failed1)
	if failed1-failed0 > heldCalls {
		t.Errorf("%v client calls failed around the breakpoint, more than the %.0f it could hold", failed1-failed0, heldCalls)
	}
	if failed2 != failed1 {
		t.Errorf("%v client calls failed after the debugger detached", failed2-failed1)
	}
}

// waitDebugBuild waits until the program Delve runs at addr is a debug
// build, whose debug information has file:line (after a switch to debug
// mode, the first process may be the previous, optimized build, which
// Delve runs without it until the debug build is compiled).
func waitDebugBuild(t *testing.T, addr, file string, line int) {
	t.Helper()
	err := kube.Poll(t.Context(), 3*time.Minute, fmt.Sprintf("the debug build under Delve at %s, with %s:%d", addr, filepath.Base(file), line), func(context.Context) (bool, string) {
		c, err := attach(addr)
		if err != nil {
			return false, err.Error()
		}
		defer c.Disconnect(true) //nolint:errcheck // leaves the program running
		locs, _, err := c.FindLocation(api.EvalScope{GoroutineID: -1}, fmt.Sprintf("%s:%d", file, line), false, nil)
		return err == nil && len(locs) > 0, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// attach connects to Delve's API at addr and halts the program.
func attach(addr string) (*rpc2.RPCClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	dlv := rpc2.NewClientFromConn(conn)
	if _, err := dlv.Halt(); err != nil {
		conn.Close()
		return nil, err
	}
	return dlv, nil
}

// hasStringField reports whether a field called field with the string value
// want is among vars or their children.
func hasStringField(vars []api.Variable, field, want string) bool {
	for _, v := range vars {
		if v.Name == field && v.Value == want {
			return true
		}
		if hasStringField(v.Children, field, want) {
			return true
		}
	}
	return false
}

// cpuProfile puts the server under ghz load through localhost:20000 and
// takes a CPU profile through localhost:6060, by hand and with Tilt's "CPU
// profile (10s)" button: both parse, and their samples include the echo
// handler. The button's profile is served by the server-pprof resource.
func cpuProfile(t *testing.T, s *session) {
	t.Helper()
	ghz := echo.StartGhz(t, suite.Root, serverGRPC, "profiled", 1000, "60s")
	defer ghz.Stop(time.Second)
	// Calling: the server's count of answered calls grows by ghz's rate.
	metrics := "http://" + serverMetrics + "/metrics"
	n0, err := echo.AnsweredCalls(metrics)
	if err != nil {
		t.Fatal(err)
	}
	err = kube.Poll(t.Context(), 30*time.Second, "ghz calling through "+serverGRPC, func(context.Context) (bool, string) {
		n, err := echo.AnsweredCalls(metrics)
		return err == nil && n >= n0+300, fmt.Sprintf("%v calls answered, %v before (%v)", n, n0, err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, ghz.Output())
	}

	data, err := echo.Get(t.Context(), "http://"+serverPprof+"/debug/pprof/profile?seconds=10")
	if err != nil {
		t.Fatalf("CPU profile from %s: %v", serverPprof, err)
	}
	checkEchoSamples(t, "the profile taken by hand", data)

	checkEchoSamples(t, "the button's profile", s.clickForProfile(t, "server-cpu-profile", 40*time.Second))

	err = kube.Poll(t.Context(), 90*time.Second, "pprof's web UI at "+serverPprofUI+" serving the profile", func(ctx context.Context) (bool, string) {
		body, err := echo.Get(ctx, "http://"+serverPprofUI+"/ui/")
		return err == nil && bytes.Contains(body, []byte("Echo")), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server-pprof serves the button's profile at http://%s/ui/", serverPprofUI)
}

// clickForProfile clicks a profile button of the server and returns the
// profile it saved as the latest, once it is there.
func (s *session) clickForProfile(t *testing.T, button string, timeout time.Duration) []byte {
	t.Helper()
	latest := filepath.Join(s.Dir, "build", "profiles", "server.pb.gz")
	clicked := time.Now()
	s.ClickButton(t, button)
	err := kube.Poll(t.Context(), timeout, "a new profile in "+latest+" after the click on "+button, func(context.Context) (bool, string) {
		info, err := os.Stat(latest)
		return err == nil && info.ModTime().After(clicked), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Tilt(t, "logs", "server"))
	}
	data, err := os.ReadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// heapProfile clicks the server's "Heap profile" button: the profile it
// saves parses and holds in-use memory samples.
func heapProfile(t *testing.T, s *session) {
	t.Helper()
	heap, err := profile.ParseData(s.clickForProfile(t, "server-heap-profile", 30*time.Second))
	if err != nil {
		t.Fatalf("the heap profile does not parse: %v", err)
	}
	if !slices.ContainsFunc(heap.SampleType, func(st *profile.ValueType) bool { return st.Type == "inuse_space" }) || len(heap.Sample) == 0 {
		t.Errorf("the heap profile has sample types %v and %d samples, want inuse_space and some", heap.SampleType, len(heap.Sample))
	}
	t.Logf("the heap button's profile: %d samples", len(heap.Sample))
}

// checkEchoSamples parses a CPU profile and checks that samples were taken
// in the echo handler.
func checkEchoSamples(t *testing.T, what string, data []byte) {
	t.Helper()
	p, err := profile.ParseData(data)
	if err != nil {
		t.Fatalf("%s does not parse: %v", what, err)
	}
	in := 0
	for _, s := range p.Sample {
		for _, loc := range s.Location {
			if slices.ContainsFunc(loc.Line, func(l profile.Line) bool { return l.Function != nil && l.Function.Name == echoHandlerSym }) {
				in++
				break
			}
		}
	}
	t.Logf("%s: %d samples, %d of them in %s", what, len(p.Sample), in, echoHandlerSym)
	if in == 0 {
		t.Errorf("%s has no sample in %s", what, echoHandlerSym)
	}
}
