package supervisor

import (
	"net"

	"golang.org/x/sys/unix"
)

// passCredentials does nothing: macOS attaches no credentials to datagrams.
// The notify socket's directory, the supervisor's own, keeps other users out.
func passCredentials(*net.UnixConn) error { return nil }

// credentialsSpace is the room a datagram's credentials need: none here.
const credentialsSpace = 0

// sendersKnown: macOS does not say who sent a datagram.
const sendersKnown = false

// senderPid is unknown here: macOS does not say who sent a datagram.
func senderPid([]byte) (int, bool) { return 0, false }

// peer is the PID and user of the process at the other end of conn.
func peer(conn *net.UnixConn) (pid, uid int, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Xucred
	var perr, serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		pid, perr = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, serr
	}
	if perr != nil {
		return 0, 0, perr
	}
	return pid, int(cred.Uid), nil
}

// parentPid is the PID of pid's parent.
func parentPid(pid int) (int, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return 0, err
	}
	return int(kp.Eproc.Ppid), nil
}
