package supervisor

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// fakeProc is a process of fakeLauncher: the test says when it serves and
// when it exits, and reads the signals it got.
type fakeProc struct {
	pid    int
	sigs   chan os.Signal
	ready  func()
	exited func(error)
	once   sync.Once
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig os.Signal) error {
	p.sigs <- sig
	return nil
}

// exit reports the process's exit, once.
func (p *fakeProc) exit(err error) { p.once.Do(func() { p.exited(err) }) }

// fakeLauncher launches fakeProcs, or fails when fail is set.
type fakeLauncher struct {
	launched chan *fakeProc
	mu       sync.Mutex
	n        int
	fail     error
}

func (l *fakeLauncher) Launch(ready func(), exited func(error)) (Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return nil, l.fail
	}
	l.n++
	p := &fakeProc{pid: 100 + l.n, sigs: make(chan os.Signal, 16), ready: ready, exited: exited}
	l.launched <- p
	return p, nil
}

// harness runs a Supervisor with a fakeLauncher.
type harness struct {
	t       *testing.T
	l       *fakeLauncher
	signals chan os.Signal
	done    chan error
}

func start(t *testing.T, configure func(*Supervisor)) *harness {
	t.Helper()
	h := &harness{t: t, l: &fakeLauncher{launched: make(chan *fakeProc, 16)}, signals: make(chan os.Signal), done: make(chan error, 1)}
	s := &Supervisor{Launcher: h.l, Log: zaptest.NewLogger(t)}
	if configure != nil {
		configure(s)
	}
	go func() { h.done <- s.Run(h.signals) }()
	return h
}

// wait bounds each step: the state machine answers in microseconds.
const wait = 5 * time.Second

// quiet is how long a test watches for something that must not happen.
const quiet = 100 * time.Millisecond

func (h *harness) launch() *fakeProc {
	h.t.Helper()
	select {
	case p := <-h.l.launched:
		return p
	case <-time.After(wait):
		h.t.Fatal("no process was launched")
		return nil
	}
}

func (h *harness) noLaunch(within time.Duration) {
	h.t.Helper()
	select {
	case p := <-h.l.launched:
		h.t.Fatalf("process %d was launched, want none", p.pid)
	case <-time.After(within):
	}
}

func (h *harness) send(sig os.Signal) {
	h.t.Helper()
	select {
	case h.signals <- sig:
	case <-time.After(wait):
		h.t.Fatalf("the supervisor took no %v", sig)
	}
}

// serving launches the first process and has it serve.
func (h *harness) serving() *fakeProc {
	h.t.Helper()
	p := h.launch()
	p.ready()
	return p
}

func (h *harness) result() error {
	h.t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(wait):
		h.t.Fatal("Run did not return")
		return nil
	}
}

func (h *harness) running() {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.t.Fatalf("Run returned %v, want it running", err)
	case <-time.After(quiet):
	}
}

func gotSignal(t *testing.T, p *fakeProc, want os.Signal) {
	t.Helper()
	select {
	case sig := <-p.sigs:
		if sig != want {
			t.Fatalf("process %d got %v, want %v", p.pid, sig, want)
		}
	case <-time.After(wait):
		t.Fatalf("process %d got no %v", p.pid, want)
	}
}

func noSignal(t *testing.T, p *fakeProc) {
	t.Helper()
	select {
	case sig := <-p.sigs:
		t.Fatalf("process %d got %v, want none", p.pid, sig)
	case <-time.After(quiet):
	}
}

// TestHandOver: SIGHUP starts a new process; only once it serves does the
// old one get SIGHUP, and the supervisor runs on after it exits.
func TestHandOver(t *testing.T) {
	h := start(t, nil)
	old := h.serving()
	h.send(syscall.SIGHUP)
	next := h.launch()
	noSignal(t, old)
	next.ready()
	gotSignal(t, old, syscall.SIGHUP)
	old.exit(nil)
	h.running()
	noSignal(t, next)

	h.send(syscall.SIGTERM)
	gotSignal(t, next, syscall.SIGTERM)
	next.exit(nil)
	if err := h.result(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestStopSparesDrainingProcess: the first SIGTERM reaches the serving and
// the starting process, not one that drains after a hand-over; Run waits
// for it. A second SIGTERM reaches every process.
func TestStopSparesDrainingProcess(t *testing.T) {
	h := start(t, nil)
	old := h.serving()
	h.send(syscall.SIGHUP)
	current := h.launch()
	current.ready()
	gotSignal(t, old, syscall.SIGHUP)
	h.send(syscall.SIGHUP)
	next := h.launch()

	h.send(syscall.SIGTERM)
	gotSignal(t, current, syscall.SIGTERM)
	gotSignal(t, next, syscall.SIGTERM)
	noSignal(t, old)
	current.exit(nil)
	next.exit(nil)
	h.running() // old still drains

	h.send(syscall.SIGTERM)
	gotSignal(t, old, syscall.SIGTERM)
	old.exit(nil)
	if err := h.result(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestStopDuringHandOver: a process that reports it serves after SIGTERM
// does not retire the serving one, which is shutting down (its SIGHUP would
// cut its drain short).
func TestStopDuringHandOver(t *testing.T) {
	h := start(t, nil)
	current := h.serving()
	h.send(syscall.SIGHUP)
	next := h.launch()
	h.send(syscall.SIGTERM)
	gotSignal(t, current, syscall.SIGTERM)
	gotSignal(t, next, syscall.SIGTERM)
	next.ready()
	noSignal(t, current)
	next.exit(nil)
	current.exit(nil)
	if err := h.result(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	h.noLaunch(quiet)
}

// TestCrashRightAfterReady: a new process that serves and then exits at
// once leaves the supervisor running: it starts the program again (nothing
// else serves; the previous process is draining).
func TestCrashRightAfterReady(t *testing.T) {
	h := start(t, nil)
	old := h.serving()
	h.send(syscall.SIGHUP)
	next := h.launch()
	next.ready()
	gotSignal(t, old, syscall.SIGHUP)
	next.exit(errors.New("exit status 2"))
	again := h.launch()
	h.running()
	again.ready()
	noSignal(t, old)
	old.exit(nil)
	h.running()
	noSignal(t, again)
}

// TestStartTimeout: a process that does not serve in time is killed; its
// late report that it serves does not retire the serving process.
func TestStartTimeout(t *testing.T) {
	h := start(t, func(s *Supervisor) { s.StartTimeout = 50 * time.Millisecond })
	current := h.serving()
	h.send(syscall.SIGHUP)
	slow := h.launch()
	gotSignal(t, slow, syscall.SIGKILL)
	slow.ready()
	noSignal(t, current)
	slow.exit(errors.New("signal: killed"))
	h.running()
	noSignal(t, current)
	h.noLaunch(quiet)
}

// TestHangupDuringStart: a SIGHUP while a process starts starts another
// once the first is done, which retires the first.
func TestHangupDuringStart(t *testing.T) {
	h := start(t, nil)
	first := h.serving()
	h.send(syscall.SIGHUP)
	second := h.launch()
	h.send(syscall.SIGHUP)
	h.noLaunch(quiet) // one start at a time
	second.ready()
	gotSignal(t, first, syscall.SIGHUP)
	third := h.launch()
	third.ready()
	gotSignal(t, second, syscall.SIGHUP)
	noSignal(t, third)
}

// TestHangupDuringFailedStart: the SIGHUP that came while a start failed
// starts the next binary at once.
func TestHangupDuringFailedStart(t *testing.T) {
	h := start(t, nil)
	first := h.serving()
	h.send(syscall.SIGHUP)
	broken := h.launch()
	h.send(syscall.SIGHUP)
	broken.exit(errors.New("exit status 2"))
	fixed := h.launch()
	fixed.ready()
	gotSignal(t, first, syscall.SIGHUP)
}

// TestFailedStartLeavesPreviousServing: a new binary that exits before it
// serves, or cannot be started, changes nothing.
func TestFailedStartLeavesPreviousServing(t *testing.T) {
	h := start(t, nil)
	current := h.serving()
	h.send(syscall.SIGHUP)
	h.launch().exit(errors.New("exit status 3"))
	noSignal(t, current)

	h.l.mu.Lock()
	h.l.fail = errors.New("exec format error")
	h.l.mu.Unlock()
	h.send(syscall.SIGHUP)
	noSignal(t, current)
	h.noLaunch(quiet)
	h.running()
}

// TestFirstProcessFails: before anything served, a failure ends Run with
// it, as the program alone would end; nothing is launched again.
func TestFirstProcessFails(t *testing.T) {
	t.Run("exits", func(t *testing.T) {
		h := start(t, nil)
		bad := errors.New("exit status 2")
		h.launch().exit(bad)
		if err := h.result(); !errors.Is(err, bad) {
			t.Errorf("Run = %v, want %v", err, bad)
		}
		h.noLaunch(quiet)
	})
	t.Run("cannot start", func(t *testing.T) {
		h := &harness{t: t, l: &fakeLauncher{launched: make(chan *fakeProc, 1), fail: errors.New("no such file")}, signals: make(chan os.Signal), done: make(chan error, 1)}
		s := &Supervisor{Launcher: h.l, Log: zaptest.NewLogger(t)}
		go func() { h.done <- s.Run(h.signals) }()
		if err := h.result(); err == nil || !errors.Is(err, h.l.fail) {
			t.Errorf("Run = %v, want %v", err, h.l.fail)
		}
	})
	t.Run("times out", func(t *testing.T) {
		h := start(t, func(s *Supervisor) { s.StartTimeout = 50 * time.Millisecond })
		p := h.launch()
		gotSignal(t, p, syscall.SIGKILL)
		p.exit(errors.New("signal: killed"))
		if err := h.result(); err == nil {
			t.Error("Run = nil, want the start's timeout")
		}
	})
}

// TestCrashRestartsWithBackoff: a process that exits while it serves is
// started again after restartFirst, then later and later; a SIGHUP starts
// the next binary at once.
func TestCrashRestartsWithBackoff(t *testing.T) {
	h := start(t, nil)
	h.serving().exit(errors.New("exit status 1"))
	began := time.Now()
	p := h.launch()
	if took := time.Since(began); took < restartFirst/2 {
		t.Errorf("started again after %v, want about %v", took, restartFirst)
	}
	p.exit(errors.New("exit status 1")) // fails again before serving
	h.noLaunch(restartFirst)            // the next wait is twice as long
	h.send(syscall.SIGHUP)
	h.launch().ready()
	h.running()
}
