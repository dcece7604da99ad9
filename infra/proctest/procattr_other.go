//go:build !linux

package proctest

import "os/exec"

// diesWithParent does nothing where the kernel has no parent-death signal:
// the test's cleanup still kills every process it started.
func diesWithParent(*exec.Cmd) {}
