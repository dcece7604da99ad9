package platform

// Socket activation: a program can be given its listening sockets instead
// of opening them, by systemd's convention (LISTEN_FDS, from fd 3, named by
// LISTEN_FDNAMES) or, where no descriptor survives the way in (a debugger
// starts the program with stdin, stdout and stderr only), from the Unix
// socket LISTEN_FDS_SOCKET names, which hands them over by SCM_RIGHTS. It
// reports that it serves by sd_notify's READY=1 on NOTIFY_SOCKET.
//
// Whoever gives the sockets keeps them open, so that the next process can
// be given them too (scripts/supervisor does, for live updates): the
// sockets are shared, and SIGHUP tells the program that another process
// accepts on them now. It then finishes what it has in hand and exits
// (HandedOver, and retire.go).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// ErrHandedOver is why a program's context ends when another process
// accepts on its sockets: it finishes what it has in hand and exits.
var ErrHandedOver = errors.New("a new process serves on these sockets")

// socketsEnv names the Unix socket that hands a program its listening
// sockets when LISTEN_FDS cannot (see the top of this file).
const socketsEnv = "LISTEN_FDS_SOCKET"

// maxGivenSockets bounds the sockets one hand-over by LISTEN_FDS_SOCKET
// may carry (a program has a few listeners on a few addresses).
const maxGivenSockets = 64

// givenListeners returns the listening sockets the process was given, by
// name, or nil when it was given none, and clears the variables that gave
// them so that no child of the program sees them. LISTEN_PID names the
// process the sockets are for; systemd sets it between fork and exec,
// os/exec cannot, so a parent that starts the program with os/exec names
// itself there, and sockets from the parent are the program's too.
// It reports whether they came by LISTEN_FDS_SOCKET: from a debugger's
// supervisor, which starts the next process only once this one has exited.
func givenListeners() (named map[string][]net.Listener, bySocket bool, err error) {
	if path := os.Getenv(socketsEnv); path != "" {
		os.Unsetenv(socketsEnv) //nolint:errcheck // never fails on Unix
		named, err := receiveListeners(path)
		if err != nil {
			return nil, false, fmt.Errorf("%s=%s: %w", socketsEnv, path, err)
		}
		return named, true, nil
	}
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getppid()) {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid())) //nolint:errcheck // never fails on Unix
	}
	named, err = activation.ListenersWithNames()
	if err != nil {
		return nil, false, fmt.Errorf("given sockets (LISTEN_FDS): %w", err)
	}
	if len(named) == 0 {
		return nil, false, nil
	}
	for name, ls := range named {
		if slices.Contains(ls, nil) {
			return nil, false, fmt.Errorf("given sockets (LISTEN_FDS): %q is not a listening socket", name)
		}
	}
	return named, false, nil
}

// receiveListeners connects to the Unix socket at path and reads one
// message: the sockets' names, colon-separated as in LISTEN_FDNAMES, with
// the sockets themselves as SCM_RIGHTS.
func receiveListeners(path string) (map[string][]net.Listener, error) {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(maxGivenSockets*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read the sockets: %w", err)
	}
	var fds []int
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("read the sockets: %w", err)
	}
	for _, m := range msgs {
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return nil, fmt.Errorf("read the sockets: %w", err)
		}
		fds = append(fds, got...)
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		syscall.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), "given socket")
	}
	defer func() {
		for _, f := range files {
			f.Close() //nolint:errcheck // the listeners hold their own copies
		}
	}()
	names := strings.Split(string(buf[:n]), ":")
	if n == 0 || len(names) != len(files) {
		return nil, fmt.Errorf("%d sockets came named %q: one name each is needed", len(files), buf[:n])
	}
	named := map[string][]net.Listener{}
	for i, f := range files {
		l, err := net.FileListener(f)
		if err != nil {
			for _, ls := range named {
				for _, l := range ls {
					l.Close() //nolint:errcheck // the error below is the one to report
				}
			}
			return nil, fmt.Errorf("socket %q: not a listening socket: %w", names[i], err)
		}
		named[names[i]] = append(named[names[i]], l)
	}
	return named, nil
}

// NotifyReady tells whoever started the process, if it asked to be told
// (NOTIFY_SOCKET), that the program serves: sd_notify READY=1.
func NotifyReady(log *zap.Logger) {
	if _, err := daemon.SdNotify(true, daemon.SdNotifyReady); err != nil {
		log.Warn("could not report that this process serves (NOTIFY_SOCKET)", zap.Error(err))
	}
}
