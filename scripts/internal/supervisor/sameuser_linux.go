package supervisor

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
)

// sameUser reports whether the process at the other end of c, a TCP
// connection on loopback, runs as this process's user: the user that owns
// its socket, in /proc/net/tcp or tcp6 (what Delve's --only-same-user
// reads). A connection from elsewhere than loopback is not one: the front
// listens on loopback.
func sameUser(c net.Conn) bool {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return false
	}
	// The peer's socket: its local address is our remote one.
	for _, table := range []struct {
		file string
		hex  func(*net.TCPAddr) string
	}{{"/proc/net/tcp", hex4}, {"/proc/net/tcp6", hex6}} {
		if uid, ok := socketOwner(table.file, table.hex(remote), table.hex(local)); ok {
			return uid == os.Getuid()
		}
	}
	return false
}

// socketOwner finds the socket from local to remote in a /proc/net table
// and returns its owner's user ID.
func socketOwner(file, local, remote string) (int, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		var (
			sl                  int
			l, r, st, queue, tm string
			retransmit, uid     int
		)
		if n, _ := fmt.Sscanf(line, "%d: %s %s %s %s %s %x %d", &sl, &l, &r, &st, &queue, &tm, &retransmit, &uid); n == 8 && l == local && r == remote {
			return uid, true
		}
	}
	return 0, false
}

// hex4 writes an IPv4 address as /proc/net/tcp does; an IPv4 address of
// an IPv6 socket is not found there, and is looked for by hex6.
func hex4(a *net.TCPAddr) string {
	b := a.IP.To4()
	if b == nil {
		return ""
	}
	return fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(b), a.Port)
}

// hex6 writes an address as /proc/net/tcp6 does: four 32-bit words in the
// machine's order (little-endian on the architectures Delve supports).
func hex6(a *net.TCPAddr) string {
	b := a.IP.To16()
	var s strings.Builder
	for i := 0; i < 16; i += 4 {
		fmt.Fprintf(&s, "%08X", binary.LittleEndian.Uint32(b[i:i+4]))
	}
	return fmt.Sprintf("%s:%04X", s.String(), a.Port)
}
