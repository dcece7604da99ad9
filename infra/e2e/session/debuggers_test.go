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
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	"github.com/go-delve/delve/service/dap/daptest"
	"github.com/go-delve/delve/service/rpc2"
	"github.com/google/go-dap"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

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

// inClusterCallStops sets a breakpoint at file:line in the server that
// Delve runs on this machine and waits for the first stop, which only a
// call of the in-cluster client can make (its name is CLIENT_NAME's
// default, "world"), then lets it go.
func inClusterCallStops(t *testing.T, file string, line int) {
	t.Helper()
	dlv, err := attach(serverDelve)
	if err != nil {
		t.Fatalf("attach to Delve at %s: %v", serverDelve, err)
	}
	bp, err := dlv.CreateBreakpoint(&api.Breakpoint{File: file, Line: line})
	if err != nil {
		t.Fatalf("breakpoint at %s:%d: %v", file, line, err)
	}
	select {
	case state := <-dlv.Continue():
		if state.Err != nil || state.CurrentThread == nil || state.CurrentThread.Breakpoint == nil || state.CurrentThread.Breakpoint.ID != bp.ID {
			t.Fatalf("stopped, but not at the breakpoint: %+v", state)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no call of the in-cluster client stopped at the breakpoint within 10s")
	}
	args, err := dlv.ListFunctionArgs(api.EvalScope{GoroutineID: -1}, api.LoadConfig{FollowPointers: true, MaxVariableRecurse: 2, MaxStringLen: 64, MaxStructFields: -1})
	if err != nil {
		t.Fatalf("the handler's arguments: %v", err)
	}
	if !hasStringField(args, "Name", "world") {
		t.Errorf("the call stopped at the breakpoint is not the in-cluster client's (name \"world\"): %+v", args)
	}
	if _, err := dlv.ClearBreakpoint(bp.ID); err != nil {
		t.Fatal(err)
	}
	if err := dlv.Disconnect(true); err != nil {
		t.Fatal(err)
	}
	t.Logf("a call of the in-cluster client stopped at %s:%d in the server on this machine", filepath.Base(file), line)
}

// localDelveRSS is the resident memory, in bytes, of the Delve that hostrun
// runs on this machine for the session in dir.
func localDelveRSS(t *testing.T, dir string) int64 {
	t.Helper()
	pid := processIn(t, dir, filepath.Join("build", "local", "dlv")+"\x00")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// processIn is the id of a process of this machine whose command line
// starts with argv (NUL-separated) and whose working directory is dir.
func processIn(t *testing.T, dir, argv string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(cmd, []byte(argv)) {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join(filepath.Dir(p), "cwd")); err == nil && cwd == dir {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no process %q runs here for %s", strings.ReplaceAll(argv, "\x00", " "), dir)
	return 0
}
