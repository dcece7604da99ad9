package main

import "syscall"

// procAttr puts the program in a process group of its own, so that Tilt's
// SIGTERM to hostrun's group reaches hostrun alone, which decides when the
// program stops; and has the kernel stop the program if hostrun dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
