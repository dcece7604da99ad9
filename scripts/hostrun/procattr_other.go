//go:build !linux

package main

import "syscall"

// procAttr puts the program in a process group of its own, so that Tilt's
// SIGTERM to hostrun's group reaches hostrun alone, which decides when the
// program stops. (Only Linux can also stop it when hostrun dies.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
