package platform

// The hand-over of the listening sockets, for live updates: the binary is
// replaced in its container and PID 1 gets SIGHUP. With PREFIX_HANDOVER on,
// PID 1 is a supervisor that only owns the sockets and runs the program
// itself as its child, the worker. It passes the sockets by systemd's
// socket-activation convention (LISTEN_FDS, from fd 3; LISTEN_FDNAMES) and
// learns that a worker serves from sd_notify's READY=1 on NOTIFY_SOCKET. On
// SIGHUP it starts a worker from the binary's path, that is the new file, and
// retires the old worker only once the new one is ready. The sockets never
// close: a connection made meanwhile is accepted by one process or the other,
// and a new binary that cannot start leaves the old worker serving.
//
// Why a supervisor rather than an exec in place, which would keep the
// program's own PID: the sockets must be at fd 3 onwards in the new program,
// and a Go process already holds descriptors there (the runtime's cgroup
// files, its epoll and eventfd descriptors). Only the fork of os/exec puts
// them there without clobbering the runtime's. And an exec in place has
// nothing left to fall back on when the new binary fails to start.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// ErrHandedOver is why a worker's context ends when a new worker serves on
// its sockets: it finishes what it has in hand and exits.
var ErrHandedOver = errors.New("a new process serves on these sockets")

// workerStartTimeout is how long a new worker may take to report that it
// serves before the supervisor gives up on it (a program starts in tens of
// milliseconds; one that hangs must not hold up the next live update).
const workerStartTimeout = 10 * time.Second

// inherited returns the listening sockets that the process was started with
// (LISTEN_FDS), by name, and clears the variables so no child sees them.
// systemd sets LISTEN_PID between fork and exec; os/exec cannot, so the
// supervisor names itself there, and sockets from the parent are ours.
func inherited() (map[string][]net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getppid()) {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid())) //nolint:errcheck // never fails on Unix
	}
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("inherited sockets (LISTEN_FDS): %w", err)
	}
	if len(named) == 0 {
		return nil, nil
	}
	for name, ls := range named {
		if slices.Contains(ls, nil) {
			return nil, fmt.Errorf("inherited sockets (LISTEN_FDS): %q is not a listening socket", name)
		}
	}
	return named, nil
}

// NotifyReady tells the supervisor, if one started this process, that it
// serves (sd_notify READY=1); it does nothing without NOTIFY_SOCKET.
func NotifyReady(log *zap.Logger) {
	if _, err := daemon.SdNotify(true, daemon.SdNotifyReady); err != nil {
		log.Warn("could not tell the supervisor that this process serves", zap.Error(err))
	}
}

// socket is a listening socket the supervisor passes to its workers.
type socket struct {
	name string
	file *os.File
}

// supervisor runs workers on its sockets; see the top of this file.
type supervisor struct {
	log     *zap.Logger
	path    string // the binary, started anew for each worker
	sockets []socket
	stdout  io.Writer
	stderr  io.Writer
	readies chan *worker
	exits   chan *worker
	done    chan struct{} // closed when run returns
	started int           // workers started so far
}

// worker is one child process of the supervisor.
type worker struct {
	cmd     *exec.Cmd
	notify  *net.UnixConn
	cleanup func() // removes the notify socket's file, if it has one
	err     error  // of Wait, once it is sent on exits
}

// Supervise hands the listeners' sockets to a worker, the program's binary
// started anew, and serves that way until SIGINT or SIGTERM, which it
// passes on to its workers before it returns the last worker's exit. Each
// SIGHUP starts a new worker and, once it serves, sends the previous one
// SIGHUP: it drains and exits. A new worker that fails is logged and the
// previous one serves on.
func (p *Program) Supervise(open *Listeners) error {
	defer signal.Stop(p.supervisorSignals)
	path, err := os.Executable()
	if err != nil {
		return fmt.Errorf("hand-over: the program's own binary: %w", err)
	}
	s := &supervisor{
		log:     p.Log.Named("handover"),
		path:    path,
		stdout:  p.stdout,
		stderr:  p.stderr,
		readies: make(chan *worker),
		exits:   make(chan *worker),
		done:    make(chan struct{}),
	}
	for _, l := range open.taken {
		for _, part := range l.parts {
			f, err := part.(interface{ File() (*os.File, error) }).File()
			if err != nil {
				return fmt.Errorf("hand-over: socket %s: %w", l.name, err)
			}
			defer f.Close()
			s.sockets = append(s.sockets, socket{name: l.name, file: f})
		}
		// The workers accept; this process only keeps the sockets open.
		l.lis.Close() //nolint:errcheck // the files keep the sockets
	}
	return s.run(p.supervisorSignals)
}

// run is the supervisor's loop: current serves; next, once started, is to
// replace it; retired workers drain and exit on their own.
func (s *supervisor) run(signals <-chan os.Signal) error {
	defer close(s.done)
	var current, next *worker
	retired := map[*worker]bool{}
	var nextTimeout <-chan time.Time
	stopping, again := false, false // again: a SIGHUP came while next started
	var exitErr error
	begin := func() {
		w, err := s.start()
		if err != nil {
			s.log.Error("could not start the program", zap.String("binary", s.path), zap.Error(err))
			if current == nil {
				exitErr = err // nothing serves: the program fails
			}
			return
		}
		next, nextTimeout = w, time.After(workerStartTimeout)
	}
	stop := func(sig os.Signal) {
		stopping = true
		for _, w := range append([]*worker{current, next}, slices.Collect(maps.Keys(retired))...) {
			w.signal(sig)
		}
	}
	begin()
	for current != nil || next != nil || len(retired) > 0 {
		select {
		case sig := <-signals:
			switch {
			case sig != syscall.SIGHUP:
				s.log.Info("passing the signal on to the program", zap.Stringer("signal", sig))
				stop(sig)
			case stopping:
			case next != nil:
				again = true
			default:
				s.log.Info("SIGHUP: starting the binary anew on the same sockets", zap.String("binary", s.path))
				begin()
			}
		case w := <-s.readies:
			if w != next {
				continue
			}
			if current != nil {
				s.log.Info("the new process serves; the previous one drains", zap.Int("pid", w.pid()), zap.Int("previous", current.pid()))
				current.signal(syscall.SIGHUP)
				retired[current] = true
			}
			current, next, nextTimeout = w, nil, nil
			if again && !stopping {
				again = false
				begin()
			}
		case <-nextTimeout:
			s.log.Error("the new process did not report that it serves in time; stopping it",
				zap.Duration("timeout", workerStartTimeout), zap.Int("pid", next.pid()))
			next.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
			nextTimeout = nil
		case w := <-s.exits:
			switch {
			case w == next:
				next, nextTimeout = nil, nil
				if current == nil { // the first one: nothing serves, the program fails as it did
					exitErr = w.exitError()
					stop(syscall.SIGTERM)
					continue
				}
				if !stopping {
					s.log.Error("the new binary exited before it served (its output is above); the previous process serves on",
						zap.String("binary", s.path), zap.Error(w.err))
				}
				if again && !stopping {
					again = false
					begin()
				}
			case w == current:
				current = nil
				exitErr = w.exitError()
				if !stopping {
					// Nothing else accepts on the sockets: end as the program
					// would without a supervisor, and let the container restart.
					s.log.Error("the program exited", zap.Int("pid", w.pid()), zap.Error(w.err))
					stop(syscall.SIGTERM)
				}
			default:
				delete(retired, w)
			}
		}
	}
	return exitErr
}

// start starts a worker from the binary's path with the sockets at fd 3
// onwards and a notify socket of its own.
func (s *supervisor) start() (*worker, error) {
	s.started++
	name, cleanup, err := notifyAddr(s.started)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	notify, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	cmd := exec.Command(s.path)
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	diesWithSupervisor(cmd)
	names := make([]string, len(s.sockets))
	for i, sk := range s.sockets {
		names[i] = sk.name
		cmd.ExtraFiles = append(cmd.ExtraFiles, sk.file)
	}
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(name, "LISTEN_") || name == "NOTIFY_SOCKET"
	}),
		"LISTEN_PID="+strconv.Itoa(os.Getpid()),
		"LISTEN_FDS="+strconv.Itoa(len(s.sockets)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+addr.Name,
	)
	w := &worker{cmd: cmd, notify: notify, cleanup: cleanup}
	if err := cmd.Start(); err != nil {
		w.close()
		return nil, err
	}
	go s.awaitReady(w)
	go func() {
		w.err = cmd.Wait()
		w.close()
		select {
		case s.exits <- w:
		case <-s.done:
		}
	}()
	return w, nil
}

// awaitReady sends w on readies when it reports READY=1.
func (s *supervisor) awaitReady(w *worker) {
	buf := make([]byte, 4096)
	for {
		n, err := w.notify.Read(buf)
		if err != nil {
			return // the worker exited
		}
		for line := range strings.Lines(string(buf[:n])) {
			if strings.TrimSpace(line) == daemon.SdNotifyReady {
				select {
				case s.readies <- w:
				case <-s.done:
				}
				return
			}
		}
	}
}

// exitError is the error the program ends with when w ended it.
func (w *worker) exitError() error {
	if w.err == nil {
		return nil
	}
	return fmt.Errorf("the program (pid %d): %w", w.pid(), w.err)
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

func (w *worker) signal(sig os.Signal) {
	if w != nil {
		w.cmd.Process.Signal(sig) //nolint:errcheck // it may have exited meanwhile
	}
}

func (w *worker) close() {
	w.notify.Close() //nolint:errcheck // ends awaitReady
	w.cleanup()
}
