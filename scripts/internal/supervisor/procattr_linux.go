package supervisor

import "syscall"

// childAttr starts a child in a process group of its own, so that a signal
// to the supervisor's group (Ctrl-C in a terminal, a tool that stops a
// group) reaches the supervisor alone, which passes it on as it should (a
// draining process must drain); and has the kernel send the child SIGTERM
// if the supervisor dies first (killed, say), so that no process of the
// program outlives it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
