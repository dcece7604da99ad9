//go:build !linux

package supervisor

import "net"

// sameUser accepts every connection where the kernel does not tell a
// socket's owner to other processes (Delve does the same there).
func sameUser(net.Conn) bool { return true }
