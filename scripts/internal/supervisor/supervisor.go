// Package supervisor holds a program's listening sockets and runs the
// program on them, a new process for each new binary, so that a live update
// never closes a socket: a connection made while one process hands over to
// the next waits in the kernel's accept queue. The program only consumes
// the sockets (systemd's LISTEN_FDS, or LISTEN_FDS_SOCKET under a debugger)
// and reports READY=1 on NOTIFY_SOCKET once it serves; SIGHUP tells it that
// another process accepts on them, and it drains and exits.
//
// Supervisor is the state machine; a Launcher starts the program: Exec as
// a child process, Delve under one Delve server that outlives every
// process. scripts/supervisor is the command (PID 1 of the dev image) and
// scripts/hostrun runs one on this machine (--local).
package supervisor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Process is one process of the program.
type Process interface {
	Pid() int
	Signal(os.Signal) error
}

// Launcher starts the program anew on the supervisor's sockets.
type Launcher interface {
	// Launch starts a process of the program. It calls ready once the
	// process reports that it serves, and exited once it has exited, with
	// the error of its exit (nil for status 0); each at most once, from any
	// goroutine, and exited always, eventually.
	Launch(ready func(), exited func(error)) (Process, error)
}

// Supervisor runs the program and hands its sockets from one process to the
// next. Its zero value is not usable: set Launcher and Log.
type Supervisor struct {
	Launcher Launcher
	Log      *zap.Logger
	// Sequential retires the serving process before it launches the next,
	// for a launcher that runs one process at a time (a debugger), and
	// retries a first process that fails. Else the next process starts
	// beside it and takes over once it serves.
	Sequential bool
	// StartTimeout is how long a new process may take to serve before it is
	// killed (0: no limit; a breakpoint may hold a debugged start).
	StartTimeout time.Duration
}

// Restarting a program that exited while it served (a crash): after
// restartFirst, doubling with each failure in a row up to restartMax. A
// new binary is started at once.
const (
	restartFirst = 250 * time.Millisecond
	restartMax   = 10 * time.Second
)

// worker is one process and what the supervisor knows of it.
type worker struct {
	n       int
	proc    Process
	started time.Time
	gone    bool // it has exited
}

// event is a worker's report: ready, or exited with err.
type event struct {
	w     *worker
	ready bool
	err   error
}

// run is the state of one Run.
type run struct {
	*Supervisor
	events   chan event
	done     chan struct{}
	launched int

	current  *worker          // serves
	next     *worker          // started, to take over once it serves
	others   map[*worker]bool // retired (draining), or killed: awaited only
	served   bool             // a process has served: failures are retried from now on
	again    bool             // a new binary came while next started
	waiting  bool             // sequential: launch once the retired have exited
	stopping bool
	stops    int // stop signals received
	failures int // failed starts or crashes since a process last served
	err      error

	startTimer   *time.Timer
	restartTimer *time.Timer
}

// Run runs the program until it is stopped, taking signals from signals:
// SIGHUP launches the binary anew and retires the serving process once the
// new one serves; SIGINT and SIGTERM stop the program (they are passed on
// to the serving and the starting process; the retired ones drain on; a
// second stop signal reaches them too). A process that exits while it
// serves is launched again, and one that fails to start leaves the serving
// one in place; but a failure before any process has served ends Run with
// it, as the program alone would end (Sequential: it is retried, and the
// next binary started at once). Run returns once every process has exited,
// with the error of the last serving process's exit.
func (s *Supervisor) Run(signals <-chan os.Signal) error {
	r := &run{
		Supervisor: s,
		events:     make(chan event),
		done:       make(chan struct{}),
		others:     map[*worker]bool{},
		startTimer: stoppedTimer(), restartTimer: stoppedTimer(),
	}
	defer close(r.done)
	r.launch()
	for !r.finished() {
		select {
		case sig := <-signals:
			r.signal(sig)
		case e := <-r.events:
			if e.ready {
				r.ready(e.w)
			} else {
				r.exited(e.w, e.err)
			}
		case <-r.startTimer.C:
			r.startTimedOut()
		case <-r.restartTimer.C:
			if !r.stopping && r.current == nil && r.next == nil {
				r.Log.Info("starting the program again", zap.String("event", "restart"))
				r.launch()
			}
		}
	}
	return r.err
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func (r *run) finished() bool {
	return r.stopping && r.current == nil && r.next == nil && len(r.others) == 0
}

// report passes a worker's event to the loop, unless Run has returned.
func (r *run) report(e event) {
	select {
	case r.events <- e:
	case <-r.done:
	}
}

// launch starts a new process as next.
func (r *run) launch() {
	r.launched++
	w := &worker{n: r.launched, started: time.Now()}
	proc, err := r.Launcher.Launch(
		func() { r.report(event{w: w, ready: true}) },
		func(err error) { r.report(event{w: w, err: err}) },
	)
	if err != nil {
		r.Log.Error("could not start the program", zap.String("event", "start_failed"), zap.Error(err))
		r.failed(fmt.Errorf("start the program: %w", err))
		return
	}
	w.proc = proc
	r.next = w
	if r.StartTimeout > 0 {
		r.startTimer.Reset(r.StartTimeout)
	}
	r.Log.Info("started the program", zap.String("event", "started"), zap.Int("pid", proc.Pid()))
}

// failed handles a start that failed or a process that ended while nothing
// else serves: before anything served, it ends Run with err, unless the
// launcher is a debugger's (after a switch to debug mode, the debug build
// comes as the next binary, a live update; what the image held may fail
// under the debugger); otherwise it launches again later.
func (r *run) failed(err error) {
	switch {
	case r.stopping:
	case !r.served && !r.Sequential:
		r.err = err
		r.stop(syscall.SIGTERM)
	case r.current == nil && r.next == nil:
		delay := min(restartFirst<<min(r.failures, 10), restartMax)
		r.failures++
		r.Log.Warn("nothing serves; starting the program again later (or on the next build)", zap.String("event", "restart_scheduled"), zap.Duration("in", delay))
		r.restartTimer.Reset(delay)
	}
}

// signal handles a signal to the supervisor.
func (r *run) signal(sig os.Signal) {
	if sig != syscall.SIGHUP {
		r.stop(sig)
		return
	}
	if r.stopping {
		return
	}
	r.Log.Info("a new binary: starting it on the same sockets", zap.String("event", "upgrade"))
	r.upgrade()
}

// upgrade launches the binary anew: at once, or once the starting process
// is done, or, sequentially, once the serving one has retired.
func (r *run) upgrade() {
	r.restartTimer.Stop()
	r.failures = 0
	switch {
	case r.next != nil:
		r.again = true
	case r.waiting:
	case r.Sequential && r.current != nil:
		r.retire(r.current)
		r.current = nil
		r.waiting = true
	default:
		r.launch()
	}
}

// retire tells w that another process serves (or is about to): it drains
// and exits.
func (r *run) retire(w *worker) {
	w.proc.Signal(syscall.SIGHUP) //nolint:errcheck // it may have exited; its exit is reported
	r.others[w] = true
}

// stop passes a stop signal on: the first to the serving and the starting
// process, a second to every process.
func (r *run) stop(sig os.Signal) {
	r.stops++
	if !r.stopping {
		r.Log.Info("stopping the program", zap.String("event", "stop"), zap.Stringer("signal", sig))
	}
	r.stopping, r.again, r.waiting = true, false, false
	r.startTimer.Stop()
	r.restartTimer.Stop()
	for _, w := range []*worker{r.current, r.next} {
		if w != nil {
			w.proc.Signal(sig) //nolint:errcheck // it may have exited; its exit is reported
		}
	}
	if r.stops > 1 {
		for w := range r.others {
			w.proc.Signal(sig) //nolint:errcheck // it may have exited
		}
	}
}

// ready: w reports that it serves. Only the process being started takes
// over, and not once the program is stopping.
func (r *run) ready(w *worker) {
	if w != r.next || w.gone || r.stopping {
		return
	}
	r.startTimer.Stop()
	fields := []zap.Field{zap.String("event", "serving"), zap.Int("pid", w.proc.Pid()), zap.Duration("took", time.Since(w.started))}
	if r.current != nil {
		fields = append(fields, zap.Int("previous", r.current.proc.Pid()))
		r.retire(r.current)
	}
	r.Log.Info("the new process serves", fields...)
	r.current, r.next = w, nil
	r.served, r.failures = true, 0
	if r.again {
		r.again = false
		r.upgrade()
	}
}

// exited: w has exited, with err.
func (r *run) exited(w *worker, err error) {
	w.gone = true
	switch w {
	case r.next:
		r.next = nil
		r.startTimer.Stop()
		if !r.stopping {
			r.Log.Error("the new process exited before it served (its output is above)",
				zap.String("event", "start_failed"), zap.Int("pid", w.proc.Pid()), zap.Error(exitError(err)))
		}
		r.failed(processError(w, err))
	case r.current:
		r.current = nil
		if r.stopping {
			r.err = processError(w, err)
			return
		}
		r.Log.Error("the program exited while it served", zap.String("event", "crashed"), zap.Int("pid", w.proc.Pid()), zap.Error(exitError(err)))
		r.failed(processError(w, err))
	default:
		delete(r.others, w)
		if r.waiting && len(r.others) == 0 {
			r.waiting = false
			r.launch()
		}
		return
	}
	if r.again && !r.stopping && r.next == nil {
		r.again = false
		r.upgrade()
	}
}

// startTimedOut: next did not serve within StartTimeout; it is killed and
// awaited apart, and its report that it serves, if one comes, is ignored.
func (r *run) startTimedOut() {
	w := r.next
	if w == nil {
		return
	}
	r.Log.Error("the new process did not report that it serves in time; killing it",
		zap.String("event", "start_failed"), zap.Int("pid", w.proc.Pid()), zap.Duration("timeout", r.StartTimeout))
	w.proc.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited meanwhile
	r.next = nil
	r.others[w] = true
	r.failed(fmt.Errorf("the program (pid %d) did not serve within %v", w.proc.Pid(), r.StartTimeout))
	if r.again && !r.stopping {
		r.again = false
		r.upgrade()
	}
}

// exitError is err, or a plain word for a clean exit.
func exitError(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// processError is the error a process's exit ends Run with; nil for 0.
func processError(w *worker, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("the program (pid %d): %w", w.proc.Pid(), err)
}
