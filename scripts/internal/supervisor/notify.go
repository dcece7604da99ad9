package supervisor

import (
	"net"
	"os"
	"strings"

	"go.uber.org/zap"
)

// notifySocket receives sd_notify datagrams (READY=1) at a path in the
// supervisor's own directory, out of other users' reach; where the kernel
// says who sent a datagram (Linux), only the process the supervisor waits
// for is heard, so that no other process of this user or of the pod can
// report a broken build as serving.
type notifySocket struct {
	conn *net.UnixConn
	path string
}

func listenNotify(path string) (*notifySocket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	if err := passCredentials(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return &notifySocket{conn: conn, path: path}, nil
}

// awaitReady reads datagrams until one says READY=1 from a sender that
// from allows, or the socket is closed. It reports whether one did. from
// gets the sender's PID, or 0 where the kernel does not say it.
func (n *notifySocket) awaitReady(from func(pid int) bool, log *zap.Logger) bool {
	buf := make([]byte, 4096)
	oob := make([]byte, max(credentialsSpace, 1))
	for {
		m, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return false
		}
		if !hasLine(string(buf[:m]), "READY=1") {
			continue
		}
		pid, known := senderPid(oob[:oobn])
		if !known {
			pid = 0
		}
		if from(pid) {
			return true
		}
		log.Warn("ignored a READY=1 from a process that is not the one started", zap.String("event", "foreign_ready"), zap.Int("sender", pid))
	}
}

func (n *notifySocket) Close() {
	n.conn.Close()    //nolint:errcheck // ends awaitReady
	os.Remove(n.path) //nolint:errcheck // gone with the directory otherwise
}

func hasLine(s, want string) bool {
	for line := range strings.Lines(s) {
		if strings.TrimSpace(line) == want {
			return true
		}
	}
	return false
}
