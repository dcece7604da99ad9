package programs_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-delve/delve/service/api"
	"github.com/go-delve/delve/service/dap/daptest"
	"github.com/go-delve/delve/service/rpc2"
	"github.com/google/go-dap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/proto/foopb"
)

// echoHandler is the server's echo handler as Delve names it.
const echoHandler = "main.(*echoServer).Echo"

// buildDebug builds what debug mode runs: Delve, pinned in infra/go.mod,
// and the server as scripts/build --debug builds it, for this machine.
func buildDebug(t *testing.T) (dlv, server string) {
	t.Helper()
	dir := t.TempDir()
	dlv, server = filepath.Join(dir, "dlv"), filepath.Join(dir, "server")
	for _, cmd := range []*exec.Cmd{
		exec.Command("go", "-C", "..", "build", "-o", dlv, "github.com/go-delve/delve/cmd/dlv"),
		exec.Command(filepath.Join("..", "..", "scripts", "build"), "--debug", "server", server),
	} {
		cmd.Env = append(os.Environ(), "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
	}
	return dlv, server
}

// echoLine is the file and line of the echo handler's first statement, as
// an IDE sends a breakpoint there: the debug build keeps full paths.
func echoLine(t *testing.T) (string, int) {
	t.Helper()
	file, err := filepath.Abs(filepath.Join("..", "..", "services", "server", "echo.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Echo" && fd.Recv != nil && len(fd.Body.List) > 0 {
			return file, fset.Position(fd.Body.List[0].Pos()).Line
		}
	}
	t.Fatal("no Echo method in services/server/echo.go")
	return "", 0
}

// debugged is the server under the supervisor's Delve, as debug mode runs
// it in a pod, on loopback ports.
type debugged struct {
	sup                      *proctest.Process
	bin, src                 string
	grpc, metrics, debuggers string
	edits                    int
	poll                     *proctest.Poller
	stopPoll                 func()
}

func startDebugged(t *testing.T) *debugged {
	t.Helper()
	dlv, src := buildDebug(t)
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, mustRead(t, src), 0o755); err != nil {
		t.Fatal(err)
	}
	sup := proctest.Start(t, filepath.Join(binDir, "supervisor"), serverEnv("SERVER_DEBUG_PORT=0", "SERVER_SHUTDOWN_TIMEOUT=10s"),
		"--listen", "grpc=127.0.0.1:0", "--listen", "metrics=127.0.0.1:0", "--listen", "debug=127.0.0.1:0",
		"--delve", "127.0.0.1:0", "--dlv", dlv, "--", bin)
	d := &debugged{sup: sup, bin: bin, src: src, poll: new(proctest.Poller)}
	d.grpc = sup.Addr(t, "grpc", time.Minute)
	d.metrics = sup.Addr(t, "metrics", time.Minute)
	for _, e := range events(sup, "delve_started") {
		d.debuggers, _ = e["debuggers"].(string)
	}
	if d.debuggers == "" {
		t.Fatalf("the supervisor did not say where debuggers attach:\n%s", sup.Output())
	}
	proctest.Eventually(t, time.Minute, "serves", func() bool { return proctest.CheckHealth(d.grpc) == nil })
	// What a terminal sees meanwhile: a new connection to gRPC and metrics
	// every 100ms.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { d.poll.Run(ctx, 100*time.Millisecond, d.grpc, d.metrics) })
	d.stopPoll = func() { cancel(); wg.Wait() }
	return d
}

// edit replaces the binary, as a live update does, and waits until the new
// process serves.
func (d *debugged) edit(t *testing.T) {
	t.Helper()
	before := len(events(d.sup, "serving"))
	replace(t, d.bin, d.src, "")
	d.sup.Signal(t, syscall.SIGHUP)
	d.edits++
	proctest.Eventually(t, time.Minute, fmt.Sprintf("edit %d serves", d.edits), func() bool { return len(events(d.sup, "serving")) > before })
}

// call calls echo with name in the background; its answer comes on the
// channel.
func (d *debugged) call(name string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := grpc.NewClient(d.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		reply, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: name})
		if err == nil && !strings.Contains(reply.GetMessage(), name) {
			err = fmt.Errorf("reply %q", reply.GetMessage())
		}
		done <- err
	}()
	return done
}

func answered(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer", what)
	}
}

// callAllAlong calls echo every 100ms until the function it returns is
// called, which reports how many calls failed.
func (d *debugged) callAllAlong(t *testing.T) func() int {
	ctx, cancel := context.WithCancel(t.Context())
	var failed atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := <-d.call("other"); err != nil {
				failed.Add(1)
				t.Logf("a call of the other client: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return func() int { cancel(); wg.Wait(); return int(failed.Load()) }
}

// TestDebugHandover: the server under the supervisor's Delve, as debug mode
// runs it: 3 edits with no debugger attached, then one debugger on Delve's
// API (GoLand's, dlv connect's), then one on DAP (VS Code's), each
// connected once: a breakpoint on the echo handler
// stops a call before and after each of 3 edits, keeps its ID, and the
// debugger never hears that the program ended. Meanwhile a new connection
// every 100ms to the gRPC and metrics sockets: none fails.
func TestDebugHandover(t *testing.T) {
	d := startDebugged(t)
	const edits = 3
	// With no debugger attached first: the supervisor runs each new process.
	for range edits {
		d.edit(t)
	}
	others := breakAcrossEditsOnAPI(t, d, edits)
	breakAcrossEditsOnDAP(t, d, edits)

	d.stopPoll()
	if n := others(); n > 0 {
		t.Errorf("%d calls of the other client failed, want 0", n)
	}
	if n := d.poll.Failed(); n > 0 || d.poll.OK() == 0 {
		t.Errorf("%d of %d connections to the sockets failed across %d edits under Delve, want 0:\n%s",
			n, n+d.poll.OK(), d.edits, strings.Join(d.poll.Failures(), "\n"))
	}
	t.Logf("%d edits under Delve, with no debugger, then one on the API, then one on DAP: every call stopped at its breakpoint; %d connections ok, 0 failed",
		d.edits, d.poll.OK())
}

// breakAcrossEditsOnAPI connects a debugger on Delve's API (GoLand's, dlv
// connect's), starts the other client's calls (callAllAlong, whose result
// it returns) and sets a breakpoint on the echo handler for the test's
// calls only: a call stops at it before and after each of edits edits,
// which never end the debugger's run, and the breakpoint keeps its ID.
func breakAcrossEditsOnAPI(t *testing.T, d *debugged, edits int) (others func() int) {
	t.Helper()
	conn, err := net.Dial("tcp", d.debuggers)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc2.NewClientFromConn(conn)
	if _, err := c.Halt(); err != nil {
		t.Fatal(err)
	}
	// Another client calls all along, as the in-cluster one does: the
	// breakpoints stop only the test's calls (their condition).
	others = d.callAllAlong(t)
	bp, err := c.CreateBreakpoint(&api.Breakpoint{FunctionName: echoHandler, Cond: `req.Name != "other"`})
	if err != nil {
		t.Fatal(err)
	}
	run := c.Continue()
	for i := range edits + 1 {
		name := fmt.Sprintf("api-%d", i)
		done := d.call(name)
		select {
		case st := <-run:
			if st.Err != nil || st.CurrentThread == nil || st.CurrentThread.Breakpoint == nil || st.CurrentThread.Breakpoint.ID != bp.ID {
				t.Fatalf("after %d edits, the call did not stop at breakpoint %d: %+v", i, bp.ID, st)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("after %d edits, the call did not stop at the breakpoint", i)
		}
		run = c.Continue()
		answered(t, done, name)
		if i == edits {
			break
		}
		d.edit(t)
		select {
		case st := <-run:
			t.Fatalf("edit %d ended the debugger's run: %+v", i+1, st)
		default:
		}
	}
	if _, err := c.Halt(); err != nil {
		t.Fatal(err)
	}
	<-run
	bps, err := c.ListBreakpoints(false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(bps, func(b *api.Breakpoint) bool { return b.ID == bp.ID && b.FunctionName == echoHandler }) {
		t.Errorf("breakpoint %d is gone after %d edits: %v", bp.ID, edits, bps)
	}
	if _, err := c.ClearBreakpoint(bp.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(true); err != nil {
		t.Fatal(err)
	}
	return others
}

// breakAcrossEditsOnDAP attaches a debugger on DAP in remote mode, as VS
// Code's Go extension does, with a breakpoint on the echo handler's line
// for the test's calls only: a call stops at it before and after each of
// edits edits, and the debugger hears of each new build.
func breakAcrossEditsOnDAP(t *testing.T, d *debugged, edits int) {
	t.Helper()
	file, line := echoLine(t)
	v := daptest.NewClient(d.debuggers)
	t.Cleanup(v.Close)
	v.InitializeRequest()
	proctest.ExpectDAP[*dap.InitializeResponse](t, v)
	v.AttachRequest(map[string]any{"mode": "remote", "request": "attach"})
	proctest.ExpectDAP[*dap.AttachResponse](t, v)
	v.SetBreakpointsRequestWithArgs(file, []int{line}, map[int]string{line: `req.Name != "other"`}, nil, nil)
	set := proctest.ExpectDAP[*dap.SetBreakpointsResponse](t, v)
	if len(set.Body.Breakpoints) != 1 || !set.Body.Breakpoints[0].Verified {
		t.Fatalf("breakpoint at %s:%d: %+v", file, line, set.Body.Breakpoints)
	}
	id := set.Body.Breakpoints[0].Id
	v.ConfigurationDoneRequest()
	proctest.ExpectDAP[*dap.ConfigurationDoneResponse](t, v)
	for i := range edits + 1 {
		name := fmt.Sprintf("dap-%d", i)
		done := d.call(name)
		stopped := proctest.ExpectDAP[*dap.StoppedEvent](t, v)
		if stopped.Body.Reason != "breakpoint" || !slices.Contains(stopped.Body.HitBreakpointIds, id) {
			t.Fatalf("after %d edits: stopped %+v, want at breakpoint %d", i, stopped.Body, id)
		}
		v.ContinueRequest(stopped.Body.ThreadId)
		proctest.ExpectDAP[*dap.ContinueResponse](t, v)
		answered(t, done, name)
		if i == edits {
			break
		}
		d.edit(t)
		for out := proctest.ExpectDAP[*dap.OutputEvent](t, v); !strings.Contains(out.Body.Output, "A new build of the program runs"); {
			out = proctest.ExpectDAP[*dap.OutputEvent](t, v)
		}
	}
	v.DisconnectRequest()
	proctest.ExpectDAP[*dap.DisconnectResponse](t, v)
}

// TestDebuggerAttachesDuringRestart: a debugger that attaches (and halts)
// while Delve restarts the program keeps it halted: the supervisor does not
// continue it behind the debugger's back, so the debugger's next request
// is answered. Attaches every 50ms across 3 edits, each stops, asks,
// detaches.
func TestDebuggerAttachesDuringRestart(t *testing.T) {
	d := startDebugged(t)
	file, line := echoLine(t)
	edits := make(chan struct{})
	go func() {
		defer close(edits)
		for range 3 {
			time.Sleep(700 * time.Millisecond)
			d.edit(t)
		}
	}()
	attaches := 0
	for done := false; !done; attaches++ {
		select {
		case <-edits:
			done = true
		default:
		}
		conn, err := net.Dial("tcp", d.debuggers)
		if err != nil {
			t.Fatal(err)
		}
		c := rpc2.NewClientFromConn(conn)
		halted := make(chan error, 1)
		go func() {
			_, err := c.Halt()
			halted <- err
		}()
		select {
		case err := <-halted:
			if err != nil {
				conn.Close()
				continue // the old process had exited: attach to the new one
			}
		case <-time.After(10 * time.Second):
			// A halt just before a continue starts is cleared by it: the
			// front halts again until Delve answers.
			t.Fatalf("attach %d: the halt was not answered in 10s:\n%s", attaches+1, d.sup.Output())
		}
		found := make(chan error, 1)
		go func() {
			_, _, err := c.FindLocation(api.EvalScope{GoroutineID: -1}, fmt.Sprintf("%s:%d", file, line), false, nil)
			found <- err
		}()
		select {
		case err := <-found:
			// The old process may exit between the halt and the request.
			if err != nil && !strings.Contains(err.Error(), "has exited") {
				t.Fatalf("attach %d: the echo handler's line: %v", attaches+1, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attach %d: the halted program runs on (a request waits for it to stop):\n%s", attaches+1, d.sup.Output())
		}
		if err := c.Disconnect(true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stopPoll()
	t.Logf("%d attaches across %d edits, each answered", attaches, d.edits)
}
