package supervisor

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// Exec launches the program as a child process with the sockets at fd 3
// onwards (LISTEN_FDS, LISTEN_FDNAMES; LISTEN_PID names the supervisor,
// which os/exec cannot replace by the child's PID) and a notify socket of
// its own. Command[0] is started from its path each time, so a new binary
// written there is the next process.
type Exec struct {
	Command []string
	Sockets []Socket
	Dir     string   // the supervisor's own directory, for the notify sockets
	Env     []string // the program's environment, without the variables above
	Stdout  io.Writer
	Stderr  io.Writer
	Log     *zap.Logger

	launched int
}

// Launch starts the program; see Launcher.
func (e *Exec) Launch(ready func(), exited func(error)) (Process, error) {
	e.launched++
	notify, err := listenNotify(filepath.Join(e.Dir, fmt.Sprintf("notify-%d", e.launched)))
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	cmd := exec.Command(e.Command[0], e.Command[1:]...)
	cmd.Stdout, cmd.Stderr = e.Stdout, e.Stderr
	cmd.SysProcAttr = childAttr()
	for _, s := range e.Sockets {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.File)
	}
	cmd.Env = append(withoutActivation(e.Env),
		"LISTEN_PID="+strconv.Itoa(os.Getpid()),
		"LISTEN_FDS="+strconv.Itoa(len(e.Sockets)),
		"LISTEN_FDNAMES="+names(e.Sockets),
		"NOTIFY_SOCKET="+notify.path,
	)
	if err := cmd.Start(); err != nil {
		notify.Close()
		return nil, err
	}
	pid := cmd.Process.Pid
	go func() {
		if notify.awaitReady(func(sender int) bool { return sender == pid || (sender == 0 && !sendersKnown) }, e.Log) {
			ready()
		}
	}()
	go func() {
		err := cmd.Wait()
		notify.Close()
		exited(err)
	}()
	return child{cmd.Process}, nil
}

// child is a process the supervisor started.
type child struct{ p *os.Process }

func (c child) Pid() int                   { return c.p.Pid }
func (c child) Signal(sig os.Signal) error { return c.p.Signal(sig) }

// withoutActivation is env without the variables that give sockets or ask
// for readiness: those are the supervisor's to set.
func withoutActivation(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(name, "LISTEN_") || name == "NOTIFY_SOCKET"
	})
}
