//go:build !linux

package dashboards_test

import "os/exec"

// diesWithParent is a no-op where the kernel offers no parent-death signal:
// t.Cleanup still kills every process of a test that ends.
func diesWithParent(*exec.Cmd) {}
