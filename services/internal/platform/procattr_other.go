//go:build !linux

package platform

import (
	"os"
	"os/exec"
	"path/filepath"
)

// diesWithSupervisor does nothing where the kernel cannot signal a child
// when its parent dies; containers, where the supervisor runs, are Linux.
func diesWithSupervisor(*exec.Cmd) {}

// notifyAddr is the address of worker n's notify socket: a file in a new
// temporary directory, which cleanup removes.
func notifyAddr(int) (addr string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "handover-")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, "notify"), func() { os.RemoveAll(dir) }, nil //nolint:errcheck // best effort
}
