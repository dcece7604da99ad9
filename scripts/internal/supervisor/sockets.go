package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Socket is a listening socket the supervisor holds for the program.
type Socket struct {
	Name string   // the program's name for it (LISTEN_FDNAMES)
	File *os.File // the supervisor's own descriptor
	Addr net.Addr
}

// socketName is what LISTEN_FDNAMES allows in a name (no colon) and what
// the programs call their listeners.
var socketName = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// ParseListen reads a --listen value, NAME=HOST:PORT[,HOST:PORT...]: the
// name the program knows the socket by and each address it listens on.
func ParseListen(v string) (name string, addrs []string, err error) {
	name, list, ok := strings.Cut(v, "=")
	if !ok || !socketName.MatchString(name) {
		return "", nil, fmt.Errorf("%q: want NAME=HOST:PORT[,HOST:PORT...] with a lower-case NAME such as grpc", v)
	}
	for a := range strings.SplitSeq(list, ",") {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %w", v, err)
		}
		if host != "" && net.ParseIP(host) == nil {
			return "", nil, fmt.Errorf("%q: %q is not an IP address", v, host)
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			return "", nil, fmt.Errorf("%q: %q is not a TCP port (0-65535, 0 for any free one)", v, port)
		}
		addrs = append(addrs, a)
	}
	return name, addrs, nil
}

// Listen opens a TCP socket on each address for name; port 0, any free
// one, is the same on every address, the first's. On an error it closes
// those it opened.
func Listen(ctx context.Context, name string, addrs []string) ([]Socket, error) {
	var sockets []Socket
	for _, a := range addrs {
		if host, port, _ := net.SplitHostPort(a); port == "0" && len(sockets) > 0 {
			a = net.JoinHostPort(host, strconv.Itoa(sockets[0].Addr.(*net.TCPAddr).Port))
		}
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			CloseSockets(sockets)
			return nil, fmt.Errorf("listen for %s: %w", name, err)
		}
		f, err := dupListener(l.(*net.TCPListener))
		l.Close() //nolint:errcheck // the duplicate keeps the socket open
		if err != nil {
			CloseSockets(sockets)
			return nil, fmt.Errorf("listen for %s on %s: %w", name, a, err)
		}
		sockets = append(sockets, Socket{Name: name, File: f, Addr: l.Addr()})
	}
	return sockets, nil
}

// dupListener duplicates l's descriptor into a file that is handed to
// processes as it is. Not (*net.TCPListener).File: the *os.File it returns
// clears O_NONBLOCK when os/exec asks for its descriptor (Fd), and the flag
// belongs to the socket, which every process that holds it shares: a
// process that serves on it would then block in accept(2) and never see its
// listener closed. A descriptor wrapped by os.NewFile keeps the flag.
func dupListener(l *net.TCPListener) (*os.File, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("duplicate the socket: %w", dupErr)
	}
	return os.NewFile(uintptr(fd), "listener "+l.Addr().String()), nil
}

// CloseSockets closes the supervisor's descriptors.
func CloseSockets(sockets []Socket) {
	for _, s := range sockets {
		s.File.Close() //nolint:errcheck // nothing to do about it
	}
}

// names returns the sockets' names in order, for LISTEN_FDNAMES.
func names(sockets []Socket) string {
	ns := make([]string, len(sockets))
	for i, s := range sockets {
		ns[i] = s.Name
	}
	return strings.Join(ns, ":")
}
