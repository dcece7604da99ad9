//go:build !linux

package platform

import "os/exec"

// diesWithSupervisor does nothing where the kernel cannot signal a child
// when its parent dies; containers, where the supervisor runs, are Linux.
func diesWithSupervisor(*exec.Cmd) {}
