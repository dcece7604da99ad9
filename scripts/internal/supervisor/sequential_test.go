package supervisor

import (
	"errors"
	"syscall"
	"testing"
)

// TestSequential: with Sequential, the serving process retires first and
// the next is launched once it has exited.
func TestSequential(t *testing.T) {
	h := start(t, func(s *Supervisor) { s.Sequential = true })
	old := h.serving()
	h.send(syscall.SIGHUP)
	gotSignal(t, old, syscall.SIGHUP)
	h.send(syscall.SIGHUP) // coalesced: the launch takes the newest binary
	h.noLaunch(quiet)
	old.exit(nil)
	next := h.launch()
	next.ready()
	h.noLaunch(quiet)
	noSignal(t, next)

	h.send(syscall.SIGTERM)
	gotSignal(t, next, syscall.SIGTERM)
	next.exit(&DebuggedExit{Pid: next.pid, Code: 3})
	var exit *DebuggedExit
	if err := h.result(); !errors.As(err, &exit) || exit.Code != 3 {
		t.Errorf("Run = %v, want the program's exit status 3", err)
	}
}

// TestSequentialFirstFailureWaits: sequentially (under a debugger, which
// cannot run the optimized binary a first image may hold), a first process
// that fails is tried again, and the next binary is started at once.
func TestSequentialFirstFailureWaits(t *testing.T) {
	h := start(t, func(s *Supervisor) { s.Sequential = true })
	h.launch().exit(errors.New("could not open debug info"))
	h.running()
	retried := h.launch()
	retried.exit(errors.New("could not open debug info"))
	h.send(syscall.SIGHUP)
	h.launch().ready()
	h.running()
}

// TestStopWhileRetiring: sequentially, a stop while the serving process
// retires waits for it and launches nothing.
func TestStopWhileRetiring(t *testing.T) {
	h := start(t, func(s *Supervisor) { s.Sequential = true })
	old := h.serving()
	h.send(syscall.SIGHUP)
	gotSignal(t, old, syscall.SIGHUP)
	h.send(syscall.SIGTERM)
	noSignal(t, old)
	old.exit(nil)
	if err := h.result(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	h.noLaunch(quiet)
}
