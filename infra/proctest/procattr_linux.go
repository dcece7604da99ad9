package proctest

import (
	"os/exec"
	"syscall"
)

// diesWithParent has the kernel kill cmd when the test binary dies, so a
// test killed by its timeout leaves no process behind.
func diesWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
