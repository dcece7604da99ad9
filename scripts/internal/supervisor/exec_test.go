package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a program for Exec to run (TestMain): it
// takes its socket from LISTEN_FDS, and, as the variable says, reports
// READY=1 at once ("serve") or on SIGUSR1 ("wait"), then answers each
// connection with its PID until SIGHUP or SIGTERM.
const childEnv = "SUPERVISOR_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

func runChild(mode string) int {
	fmt.Printf("notify %s\n", os.Getenv("NOTIFY_SOCKET"))
	if os.Getenv("LISTEN_FDS") != "1" || os.Getenv("LISTEN_FDNAMES") != "test" || os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getppid()) {
		fmt.Fprintf(os.Stderr, "LISTEN_FDS=%s LISTEN_FDNAMES=%s LISTEN_PID=%s\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_PID"))
		return 2
	}
	l, err := net.FileListener(os.NewFile(3, "test"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR1)
	notify := func() {
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err == nil {
			c.Write([]byte("READY=1"))
			c.Close()
		}
	}
	if mode == "serve" {
		notify()
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%d\n", os.Getpid())
			c.Close()
		}
	}()
	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			notify()
			continue
		}
		return 0
	}
	return 0
}

// lineWriter passes the lines written to it on to a channel, dropping
// those nobody reads.
type lineWriter chan string

func (w lineWriter) Write(b []byte) (int, error) {
	for line := range strings.Lines(string(b)) {
		select {
		case w <- line:
		default:
		}
	}
	return len(b), nil
}

// launchChild listens on a loopback port and launches the test binary on
// it in mode; it returns the socket, the child, its output lines and
// whether it is ready and has exited.
func launchChild(t *testing.T, mode string) (Socket, Process, chan string, chan struct{}, chan struct{}) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sockets, err := Listen(context.Background(), "test", []string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { CloseSockets(sockets) })
	out := make(lineWriter, 16)
	e := &Exec{Command: []string{self}, Sockets: sockets, Dir: t.TempDir(), Env: append(os.Environ(), childEnv+"="+mode), Stdout: out, Stderr: os.Stderr, Log: zaptest.NewLogger(t)}
	ready, exited := make(chan struct{}), make(chan struct{})
	p, err := e.Launch(func() { close(ready) }, func(error) { close(exited) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		<-exited
	})
	return sockets[0], p, out, ready, exited
}

// TestExecKeepsSocketNonBlocking: launching a process leaves the shared
// socket non-blocking. Were it blocking (what (*os.File).Fd does to a file
// from net's File), a process that serves on it would block in accept(2)
// and not see its listener closed when it retires, so a connection in the
// hand-over's first milliseconds kept the old process alive.
func TestExecKeepsSocketNonBlocking(t *testing.T) {
	s, _, _, ready, _ := launchChild(t, "serve")
	<-ready
	flags, err := unix.FcntlInt(s.File.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Error("the socket is blocking after the launch, want O_NONBLOCK kept")
	}
	// And as a dup of net's File would have it: the check can fail.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Fd()
	if flags, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); flags&unix.O_NONBLOCK != 0 {
		t.Error("the check cannot fail: net's File does not clear O_NONBLOCK here")
	}
}

// TestExecGivesSockets: the process gets the supervisor's socket, named,
// and serves on it once it reports READY=1.
func TestExecGivesSockets(t *testing.T) {
	s, p, _, ready, _ := launchChild(t, "serve")
	select {
	case <-ready:
	case <-time.After(wait):
		t.Fatal("no READY=1 from the process")
	}
	c, err := net.Dial("tcp", s.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(line); got != strconv.Itoa(p.Pid()) {
		t.Errorf("the socket was answered by pid %s, want the process's %d", got, p.Pid())
	}
}

// TestExecHearsOnlyItsProcess: a READY=1 from another process (of the same
// user, or another container of the pod) does not count; the process's
// own does.
func TestExecHearsOnlyItsProcess(t *testing.T) {
	if !sendersKnown {
		t.Skip(runtime.GOOS + " does not say who sent a datagram; the supervisor's directory keeps other users out")
	}
	_, p, out, ready, _ := launchChild(t, "wait")
	var line string
	select {
	case line = <-out:
	case <-time.After(wait):
		t.Fatal("the process printed nothing")
	}
	path, ok := strings.CutPrefix(strings.TrimSpace(line), "notify ")
	if !ok || path == "" {
		t.Fatalf("the process printed %q, want its NOTIFY_SOCKET", line)
	}

	c, err := net.Dial("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
		t.Fatal("a READY=1 from another process was taken as the process's")
	case <-time.After(quiet):
	}
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-time.After(wait):
		t.Fatal("the process's own READY=1 was not heard")
	}
}
