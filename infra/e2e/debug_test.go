//go:build e2e

package e2e

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
	"github.com/go-delve/delve/service/rpc2"
	"github.com/google/pprof/profile"
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
	debugEdits     = 5
	echoHandlerSym = "main.(*echoServer).Echo"
)

// TestDebugMode runs `tilt up -- --debug server` and debugs the server in its
// pod the way an IDE does: Delve's JSON-RPC API through Tilt's forward of
// localhost:2345, a breakpoint on the echo handler at the file and line an
// IDE sends (the local path, mapped by .vscode/launch.json), a call through
// localhost:20000 that stops there with its name readable among the
// handler's arguments, then answered once the breakpoint is cleared and the
// debugger detached. Then live updates in debug mode, the same again, and a
// CPU profile under load through localhost:6060, by hand and by Tilt's
// button. Then, switched with tilt args, the client too, through
// localhost:2346 and 6061.
func TestDebugMode(t *testing.T) {
	// The client at the Tiltfile's default rate: at 60 calls/s its calls
	// would queue at the breakpoint faster than a debugger steps past them.
	s := startTilt(t, 1, 10, "--debug", "server")
	for _, p := range mustPods(t, namespace, "server", false, 1) {
		for _, r := range restrictedViolations(t, p) {
			t.Errorf("debug pod %s: %s", p.Name, r)
		}
		for _, c := range p.Spec.Containers {
			if c.LivenessProbe != nil {
				t.Errorf("debug pod %s: container %s has a liveness probe: a breakpoint held longer than it allows gets the program killed", p.Name, c.Name)
			}
		}
	}

	file, line := breakpointLocation(t, s.dir)
	t.Logf("breakpoint at %s:%d, as the IDE sends it", file, line)
	debugCall(t, s, file, line, "debug-before-edits", "debug-before-edits")

	// What a terminal sees meanwhile: a new connection to the forwards of
	// the server's gRPC and metrics ports every 100ms. Debug mode restarts
	// the program, so some are refused; this is measured, not asserted.
	logBefore := len(s.proc.Output())
	poll, stopPoll := s.pollForwards(t, 9000)
	var rs []editResult
	for range debugEdits {
		r := s.edit(t, "server")
		rs = append(rs, r)
		t.Logf("debug-mode edit %d: answered through localhost:20000 by the new code in %.2fs (%d polls failed); every pod in %.2fs (watch %.2fs, compile %.2fs, sync %.2fs, restart to answer %.2fs), %v failed calls",
			len(rs), r.user.Seconds(), r.refused, r.total.Seconds(), r.detect.Seconds(), r.compile.Seconds(), r.sync.Seconds(), r.restart.Seconds(), r.failed)
	}
	stopPoll()
	t.Logf("debug-mode edits, seen through the forwards every 100ms: %d connections ok, %d failed, %d port-forward errors in Tilt's log",
		poll.OK(), poll.Failed(), len(s.forwardErrors(logBefore)))
	if poll.OK() == 0 {
		t.Error("no connection through the forwards worked during the debug-mode edits")
	}
	sum := summarize(rs)
	t.Logf("debug-mode loop, %d server edits: through localhost:20000 p50 %.2fs, max %.2fs; every pod p50 %.2fs, max %.2fs; %v failed calls (compile p50 %.2fs, sync %.2fs, restart to answer %.2fs)",
		len(rs), sum.userP50.Seconds(), sum.userMax.Seconds(), sum.p50.Seconds(), sum.max.Seconds(), sum.failed, sum.compile.Seconds(), sum.sync.Seconds(), sum.restart.Seconds())
	// The program under Delve drains before the restart as it does without:
	// no call of the client is lost to an edit.
	if sum.failed != 0 {
		t.Errorf("%v client calls failed across %d debug-mode edits, want 0", sum.failed, len(rs))
	}

	debugCall(t, s, file, line, "debug-after-edits", fmt.Sprintf("debug-after-edits (edit %d)", s.edits))

	cpuProfile(t, s)
	heapProfile(t, s)

	// Both programs, as a person switches while Tilt runs: tilt args
	// replaces every option given before.
	s.setOptions(t, "--debug", "server", "--debug", "client")
	waitClientDebugged(t, s, true)
	s.calls = newCallCounter(t, s.target.ns)
	debugClient(t, s)

	// And back: no Delve, the liveness probes back.
	s.setOptions(t)
	waitClientDebugged(t, s, false)
	s.restoreServer(t)
}

// waitClientDebugged waits until Tilt has rolled the client out with
// (debugged) or without Delve, and its pod is ready.
func waitClientDebugged(t *testing.T, s *tiltSession, debugged bool) {
	t.Helper()
	err := poll(t.Context(), 3*time.Minute, fmt.Sprintf("the client running under Delve: %v", debugged), func(ctx context.Context) (bool, string) {
		if err := suite.c.waitRolloutIn(ctx, s.target.ns, "client", time.Second); err != nil {
			return false, err.Error()
		}
		pods, err := suite.c.runningPodsIn(ctx, s.target.ns, "client")
		if err != nil || len(pods) != 1 || !podReady(&pods[0]) {
			return false, fmt.Sprintf("%d client pods, %v", len(pods), err)
		}
		c := pods[0].Spec.Containers[0]
		underDelve := slices.ContainsFunc(c.Command, func(a string) bool { return strings.HasSuffix(a, "/dlv") })
		return underDelve == debugged && (c.LivenessProbe == nil) == debugged, fmt.Sprintf("command %v", c.Command)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// debugClient attaches to the client's Delve through localhost:2346 and
// stops it where it makes a call, then detaches: the client calls on.
// Its pprof answers on localhost:6061.
func debugClient(t *testing.T, s *tiltSession) {
	t.Helper()
	// Tilt forwards the new pod's ports once it runs, and Delve answers
	// once it has started the client.
	var dlv *rpc2.RPCClient
	err := poll(t.Context(), time.Minute, "attach to the client's Delve at "+clientDelve+" and halt it", func(context.Context) (bool, string) {
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
	ok0, _ := s.calls.read(t)
	time.Sleep(3 * time.Second)
	if ok1, _ := s.calls.read(t); ok1 <= ok0 {
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
		t.Fatal("no Echo method with a body in services/server/echo.go")
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
func debugCall(t *testing.T, s *tiltSession, file string, line int, name, want string) {
	t.Helper()
	_, failed0 := s.calls.read(t)
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
		reply, err := echoWait(ctx, serverGRPC, name)
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
	_, failed1 := s.calls.read(t)
	time.Sleep(5 * time.Second)
	_, failed2 := s.calls.read(t)
	heldCalls := float64(s.rate)*(held.Seconds()+1) + 4
	t.Logf("%s: stopped at the breakpoint %d times (the in-cluster client's calls too), process held %.1fs; client calls failed: %v while held (at most %.0f could be), %v in the 5s after the detach",
		name, stops, held.Seconds(), failed1-failed0, heldCalls, failed2-failed1)
	if failed1-failed0 > heldCalls {
		t.Errorf("%v client calls failed around the breakpoint, more than the %.0f it could hold", failed1-failed0, heldCalls)
	}
	if failed2 != failed1 {
		t.Errorf("%v client calls failed after the debugger detached", failed2-failed1)
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
func cpuProfile(t *testing.T, s *tiltSession) {
	t.Helper()
	ghz := startGhz(t, serverGRPC, "profiled", 1000, "60s")
	defer ghz.Stop(time.Second)
	// Calling: the server's count of answered calls grows by ghz's rate.
	metrics := "http://" + serverMetrics + "/metrics"
	n0, err := answeredCalls(metrics)
	if err != nil {
		t.Fatal(err)
	}
	err = poll(t.Context(), 30*time.Second, "ghz calling through "+serverGRPC, func(context.Context) (bool, string) {
		n, err := answeredCalls(metrics)
		return err == nil && n >= n0+300, fmt.Sprintf("%v calls answered, %v before (%v)", n, n0, err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, ghz.Output())
	}

	data, err := get(t.Context(), "http://"+serverPprof+"/debug/pprof/profile?seconds=10")
	if err != nil {
		t.Fatalf("CPU profile from %s: %v", serverPprof, err)
	}
	checkEchoSamples(t, "the profile taken by hand", data)

	checkEchoSamples(t, "the button's profile", s.clickForProfile(t, "server-cpu-profile", 40*time.Second))

	err = poll(t.Context(), 90*time.Second, "pprof's web UI at "+serverPprofUI+" serving the profile", func(ctx context.Context) (bool, string) {
		body, err := get(ctx, "http://"+serverPprofUI+"/ui/")
		return err == nil && bytes.Contains(body, []byte("Echo")), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server-pprof serves the button's profile at http://%s/ui/", serverPprofUI)
}

// clickForProfile clicks a profile button of the server and returns the
// profile it saved as the latest, once it is there.
func (s *tiltSession) clickForProfile(t *testing.T, button string, timeout time.Duration) []byte {
	t.Helper()
	latest := filepath.Join(s.dir, "build", "profiles", "server.pb.gz")
	clicked := time.Now()
	s.clickButton(t, button)
	err := poll(t.Context(), timeout, "a new profile in "+latest+" after the click on "+button, func(context.Context) (bool, string) {
		info, err := os.Stat(latest)
		return err == nil && info.ModTime().After(clicked), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.tilt(t, "logs", "server"))
	}
	data, err := os.ReadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// heapProfile clicks the server's "Heap profile" button: the profile it
// saves parses and holds in-use memory samples.
func heapProfile(t *testing.T, s *tiltSession) {
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
