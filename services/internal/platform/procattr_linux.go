package platform

import (
	"os/exec"
	"syscall"
)

// diesWithSupervisor has the kernel send the worker SIGTERM if its
// supervisor dies first (killed, say), so that no worker outlives it.
func diesWithSupervisor(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
