package supervisor

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Delve launches the program under one Delve server (dlv exec, headless,
// API v2, several clients) that outlives every process: a new binary is
// started by Delve's own restart, which launches the file at the same path
// again and keeps every breakpoint. Delve starts the program with stdin,
// stdout and stderr only, so the sockets reach it through the Unix socket
// LISTEN_FDS_SOCKET names in the environment, which Delve passes on. Run it
// with Supervisor.Sequential: the old process drains and exits first.
// Debuggers attach to the Front, which keeps their sessions across the
// restarts; Delve itself listens on a Unix socket in Dir.
type Delve struct {
	Dlv     string   // Delve's binary
	Command []string // the program and its arguments
	Sockets []Socket
	Dir     string   // the supervisor's own directory
	Env     []string // the program's environment, without the activation variables
	Front   *Front
	Stdout  io.Writer
	Stderr  io.Writer
	Log     *zap.Logger

	once    sync.Once
	fds     *net.UnixListener
	notify  *notifySocket
	mu      sync.Mutex
	dlv     *exec.Cmd     // under mu, with dlvDone and api
	dlvDone chan struct{} // closed once dlv has exited
	api     *rpc.Client
	expect  int       // the process whose READY=1 counts
	ready   func()    // its callback
	closing bool      // Close stops Delve
	ownRun  *rpc.Call // the supervisor's own continue, the latest
}

// delveStartTimeout bounds Delve's start, until its API answers (it reads
// the binary's debug information first).
const delveStartTimeout = 60 * time.Second

// exitPoll is how often a debugged process is looked at for its exit: it
// is Delve's child, not the supervisor's.
const exitPoll = 10 * time.Millisecond

// Launch starts the program under Delve, or, once Delve runs, has Delve
// restart it from its binary; see Launcher.
func (d *Delve) Launch(ready func(), exited func(error)) (Process, error) {
	var err error
	d.once.Do(func() { err = d.setUp() })
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dlv == nil {
		if err := d.startDelve(); err != nil {
			return nil, err
		}
	} else {
		var out struct {
			DiscardedBreakpoints []struct {
				Breakpoint struct {
					ID   int    `json:"id"`
					File string `json:"file"`
					Line int    `json:"line"`
				} `json:"breakpoint"`
				Reason string `json:"reason"`
			}
		}
		if err := d.api.Call("RPCServer.Restart", struct{}{}, &out); err != nil {
			return nil, fmt.Errorf("Delve's restart: %w", err)
		}
		// Delve restarts only once no continue runs: the supervisor's own
		// has ended, though its answer may still be on its way.
		d.ownRun = nil
		for _, b := range out.DiscardedBreakpoints {
			d.Log.Warn("a breakpoint could not be set in the new build", zap.Int("id", b.Breakpoint.ID),
				zap.String("at", fmt.Sprintf("%s:%d", b.Breakpoint.File, b.Breakpoint.Line)), zap.String("why", b.Reason))
		}
	}
	var pid struct{ Pid int }
	if err := d.api.Call("RPCServer.ProcessPid", struct{}{}, &pid); err != nil {
		return nil, fmt.Errorf("Delve's process: %w", err)
	}
	d.expect, d.ready = pid.Pid, ready
	// The process waits at its entry; the debuggers that ran the previous
	// one run it, or else the supervisor does, unless a debugger attached
	// meanwhile halted it: that one says when it runs.
	switch resumed, idle := d.Front.Resume(pid.Pid); {
	case resumed == 0 && idle == 0:
		d.continueLocked()
	case resumed == 0:
		d.Log.Info("the new process waits at its entry for the attached debugger to continue it", zap.String("event", "halted_at_entry"), zap.Int("pid", pid.Pid))
	}
	p := &debugged{pid: pid.Pid, front: d.Front}
	go d.awaitExit(p, d.dlvDone, exited)
	return p, nil
}

// runOn continues the program if it is halted while no debugger is
// attached (the last one detached leaving it halted, or its run was lost
// with its connection): nobody else would.
func (d *Delve) runOn() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.api == nil {
		return
	}
	var out struct {
		State struct {
			Running bool `json:"Running"`
			Exited  bool `json:"exited"`
		}
	}
	if d.ownRun != nil {
		// Still running the program, or just stopped (its answer on its way).
		select {
		case <-d.ownRun.Done:
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
	if err := d.api.Call("RPCServer.State", map[string]bool{"NonBlocking": true}, &out); err != nil || out.State.Running || out.State.Exited {
		return
	}
	d.Log.Info("no debugger is attached: the program runs on", zap.String("event", "run_on"))
	d.continueLocked()
}

// continueLocked runs the program, as a client of Delve's whose continue
// nobody waits for; d.mu is held. Two continues in flight would stack (the
// second runs the program again as soon as anything stops it, a
// debugger's halt included), so the supervisor has at most one.
func (d *Delve) continueLocked() {
	if d.ownRun != nil {
		select {
		case <-d.ownRun.Done:
		default:
			return
		}
	}
	d.ownRun = d.api.Go("RPCServer.Command", map[string]string{"name": "continue"}, new(struct{}), nil)
}

// setUp opens the sockets the program reaches the supervisor by.
func (d *Delve) setUp() error {
	d.Front.Detached = func() { go d.runOn() }
	var err error
	if d.notify, err = listenNotify(filepath.Join(d.Dir, "notify")); err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	go d.readies()
	d.fds, err = net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(d.Dir, "sockets"), Net: "unix"})
	if err != nil {
		return fmt.Errorf("the sockets' socket: %w", err)
	}
	go d.giveSockets()
	return nil
}

// startDelve starts dlv exec and connects to its API; d.mu is held.
func (d *Delve) startDelve() error {
	addr := filepath.Join(d.Dir, "dlv")
	os.Remove(addr) //nolint:errcheck // one an earlier Delve left
	args := []string{"exec", d.Command[0], "--headless", "--listen=unix:" + addr, "--api-version=2", "--accept-multiclient"}
	if len(d.Command) > 1 {
		args = append(append(args, "--"), d.Command[1:]...)
	}
	cmd := exec.Command(d.Dlv, args...)
	cmd.Stdout, cmd.Stderr = d.Stdout, d.Stderr
	cmd.SysProcAttr = childAttr()
	cmd.Env = append(withoutActivation(d.Env),
		socketsEnv+"="+d.fds.Addr().String(),
		"NOTIFY_SOCKET="+d.notify.path,
	)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start Delve: %w", err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(done)
		d.mu.Lock()
		if d.dlv == cmd {
			d.dlv, d.api = nil, nil
		}
		closing := d.closing
		d.mu.Unlock()
		if !closing {
			d.Log.Warn("Delve exited; it is started again with the program", zap.String("event", "delve_exited"), zap.Error(exitError(err)))
		}
	}()
	dial := func() (net.Conn, error) { return net.DialTimeout("unix", addr, 5*time.Second) }
	deadline := time.Now().Add(delveStartTimeout)
	for {
		conn, err := dial()
		if err == nil {
			d.dlv, d.dlvDone, d.api = cmd, done, jsonrpc.NewClient(conn)
			d.Front.SetDelve(dial)
			d.Log.Info("Delve serves", zap.String("event", "delve_started"), zap.Int("pid", cmd.Process.Pid), zap.Stringer("debuggers", d.Front.Listener.Addr()))
			return nil
		}
		select {
		case <-done:
			return errors.New("Delve exited before it served (its output is above)")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill() //nolint:errcheck // it may have exited
			return fmt.Errorf("Delve did not serve within %v", delveStartTimeout)
		}
	}
}

// socketsEnv names the Unix socket a program receives its sockets from
// (services/internal/platform/activation.go).
const socketsEnv = "LISTEN_FDS_SOCKET"

// giveSockets hands the sockets to each process of Delve's that asks.
func (d *Delve) giveSockets() {
	files := make([]*os.File, len(d.Sockets))
	for i, s := range d.Sockets {
		files[i] = s.File
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	for {
		conn, err := d.fds.AcceptUnix()
		if err != nil {
			return
		}
		if err := d.isDebugged(conn); err != nil {
			d.Log.Warn("refused the sockets to a process that is not Delve's", zap.String("event", "foreign_process"), zap.Error(err))
		} else if _, _, err := conn.WriteMsgUnix([]byte(names(d.Sockets)), syscall.UnixRights(fds...), nil); err != nil {
			d.Log.Warn("could not hand the sockets over", zap.Error(err))
		}
		conn.Close()
	}
}

// isDebugged checks that conn comes from a child of Delve, of this user.
func (d *Delve) isDebugged(conn *net.UnixConn) error {
	pid, uid, err := peer(conn)
	if err != nil {
		return err
	}
	if uid != os.Getuid() {
		return fmt.Errorf("pid %d runs as user %d", pid, uid)
	}
	parent, err := parentPid(pid)
	if err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dlv == nil || parent != d.dlv.Process.Pid {
		return fmt.Errorf("pid %d is not Delve's child", pid)
	}
	return nil
}

// readies passes on the READY=1 of the process Delve runs.
func (d *Delve) readies() {
	for {
		var ready func()
		ok := d.notify.awaitReady(func(pid int) bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.ready == nil || (pid != d.expect && (pid != 0 || sendersKnown)) {
				return false
			}
			ready, d.ready = d.ready, nil
			return true
		}, d.Log)
		if !ok {
			return
		}
		ready()
	}
}

// awaitExit reports the exit of p, Delve's child: once Delve has seen it
// (the process is gone), or once Delve has exited.
func (d *Delve) awaitExit(p *debugged, dlvDone <-chan struct{}, exited func(error)) {
	t := time.NewTicker(exitPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-dlvDone:
			syscall.Kill(p.pid, syscall.SIGKILL) //nolint:errcheck // Delve's end ends its child
			exited(errors.New("Delve exited"))
			return
		}
		if err := syscall.Kill(p.pid, 0); errors.Is(err, syscall.ESRCH) {
			exited(d.exitStatus(p.pid))
			return
		}
	}
}

var exitedWith = regexp.MustCompile(`has exited with status (-?\d+)`)

// exitStatus is the error of pid's exit, as Delve reports it (nil for 0).
func (d *Delve) exitStatus(pid int) error {
	d.mu.Lock()
	api := d.api
	d.mu.Unlock()
	if api == nil {
		return nil
	}
	var out struct {
		State struct {
			Exited     bool `json:"exited"`
			ExitStatus int  `json:"exitStatus"`
		}
	}
	err := api.Call("RPCServer.State", map[string]bool{"NonBlocking": true}, &out)
	code := out.State.ExitStatus
	if m := exitedWith.FindStringSubmatch(fmt.Sprint(err)); m != nil {
		code, _ = strconv.Atoi(m[1])
	}
	if code == 0 {
		return nil
	}
	return &DebuggedExit{Pid: pid, Code: code}
}

// DebuggedExit is the exit of a process Delve ran.
type DebuggedExit struct{ Pid, Code int }

func (e *DebuggedExit) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the process's exit status.
func (e *DebuggedExit) ExitCode() int { return e.Code }

// Close stops Delve (ending a process it still runs) and the front.
func (d *Delve) Close() {
	d.mu.Lock()
	api, cmd, done := d.api, d.dlv, d.dlvDone
	d.closing = true
	d.mu.Unlock()
	d.Front.Close()
	if cmd != nil {
		if api != nil {
			api.Call("RPCServer.Detach", map[string]bool{"Kill": true}, new(struct{})) //nolint:errcheck // Delve exits on it
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // it may have exited
			<-done
		}
	}
	if d.fds != nil {
		d.fds.Close() //nolint:errcheck // nothing to do about it
	}
	if d.notify != nil {
		d.notify.Close()
	}
}

// debugged is a process Delve runs.
type debugged struct {
	pid   int
	front *Front
}

func (p *debugged) Pid() int { return p.pid }

// Signal signals the process itself (Delve passes the signal on); SIGHUP
// starts a hand-over, whose end the debuggers are not told of.
func (p *debugged) Signal(sig os.Signal) error {
	if sig == syscall.SIGHUP {
		p.front.Hold()
	}
	return syscall.Kill(p.pid, sig.(syscall.Signal))
}
