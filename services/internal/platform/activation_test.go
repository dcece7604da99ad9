package platform

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// giveSockets serves one hand-over of ls, named names, on a Unix socket at
// a new path, as scripts/supervisor does for a program Delve starts; it
// returns the path.
func giveSockets(t *testing.T, names string, ls ...net.Listener) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sockets")
	srv, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	var fds []int
	for _, l := range ls {
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		fds = append(fds, int(f.Fd()))
	}
	go func() {
		c, err := srv.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		c.WriteMsgUnix([]byte(names), syscall.UnixRights(fds...), nil) //nolint:errcheck // the test reads what came
	}()
	return path
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestGivenBySocket: sockets received from LISTEN_FDS_SOCKET are the
// program's listeners, by name (two under one name: one listener on both),
// and the variable is gone for the program's children.
func TestGivenBySocket(t *testing.T) {
	grpc1, grpc2, metrics := listen(t), listen(t), listen(t)
	t.Setenv(socketsEnv, giveSockets(t, "grpc:grpc:metrics", grpc1, grpc2, metrics))
	given, bySocket, err := givenListeners()
	if err != nil || !bySocket {
		t.Fatalf("givenListeners = %v, %v, want the sockets, by socket", bySocket, err)
	}
	if _, ok := os.LookupEnv(socketsEnv); ok {
		t.Errorf("%s is still set", socketsEnv)
	}
	if len(given["grpc"]) != 2 || len(given["metrics"]) != 1 || len(given) != 2 {
		t.Fatalf("given %v, want two grpc and one metrics", given)
	}
	open := Listeners{given: given}
	lis := open.Listen(t.Context(), "grpc", 0)
	open.Listen(t.Context(), "metrics", metrics.Addr().(*net.TCPAddr).Port)
	if err := open.Err(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for _, l := range []net.Listener{grpc1, grpc2} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := lis.Accept(); err != nil {
			t.Errorf("a connection to %v: %v", l.Addr(), err)
		}
	}
}

// TestGivenSocketsMustMatch: a program given its sockets opens none itself
// (the next process could not), so a listener it is not given, or given on
// another port than configured, stops it with what is wrong.
func TestGivenSocketsMustMatch(t *testing.T) {
	metrics := listen(t)
	port := metrics.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name    string
		listen  func(*Listeners)
		wantErr string
	}{
		{"missing", func(l *Listeners) { l.Listen(t.Context(), "grpc", 20000) }, `listen for grpc: the program was given sockets, none of them named "grpc"`},
		{"other port", func(l *Listeners) { l.Listen(t.Context(), "metrics", port+1) }, "listen for metrics: the socket given for it listens on " + metrics.Addr().String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(socketsEnv, giveSockets(t, "metrics", metrics))
			given, _, err := givenListeners()
			if err != nil {
				t.Fatal(err)
			}
			open := Listeners{given: given}
			tt.listen(&open)
			if err := open.Err(zap.NewNop()); err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("Err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestGivenBySocketFails: a socket that cannot be reached, or a hand-over
// whose names do not match its sockets, is an error naming the variable.
func TestGivenBySocketFails(t *testing.T) {
	t.Setenv(socketsEnv, filepath.Join(t.TempDir(), "none"))
	if _, _, err := givenListeners(); err == nil || !strings.HasPrefix(err.Error(), socketsEnv+"=") {
		t.Errorf("no socket: %v, want an error naming %s", err, socketsEnv)
	}
	t.Setenv(socketsEnv, giveSockets(t, "grpc:metrics", listen(t)))
	if _, _, err := givenListeners(); err == nil || !strings.Contains(err.Error(), "one name each") {
		t.Errorf("two names, one socket: %v, want it refused", err)
	}
}

// flakyListener fails its first accept as a process out of descriptors
// does, then accepts from conns.
type flakyListener struct {
	net.Listener
	failed bool
	conns  chan net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

// TestJoinedListenerOutlivesAnAcceptError: one listener of several that
// fails an accept (too many open files) passes the error on, then accepts
// again, as net/http and grpc-go do with their own listener.
func TestJoinedListenerOutlivesAnAcceptError(t *testing.T) {
	flaky := &flakyListener{Listener: listen(t), conns: make(chan net.Conn, 1)}
	j := joinListeners([]net.Listener{flaky, listen(t)})
	defer j.Close()
	defer close(flaky.conns)
	if _, err := j.Accept(); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("first Accept = %v, want EMFILE passed on", err)
	}
	client, server := net.Pipe()
	defer client.Close()
	flaky.conns <- server
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := j.Accept()
		got <- c
	}()
	select {
	case c := <-got:
		if c != server {
			t.Errorf("Accept = %v, want the connection of the listener that failed before", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the listener that failed once accepts no more")
	}
}
