package platform

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// A program given its sockets shares them with whoever gave them and with
// the process that replaces it. Once its successor serves, the program stops
// accepting and lets its servers finish the connections it accepted. But
// grpc-go and net/http both drop a connection that they accepted and had
// not started on when their stop began: grpc-go closes one whose handshake
// it had not begun, net/http one whose request it read after Shutdown.
// Alone on a socket nothing is lost, as no one would answer anyway; here the
// successor would have answered. So the program's listeners count the
// connections they return, and retiring one stops its Accept first, then
// waits for its connections before the server is stopped.

// retiringListener is a listener that can stop accepting while its server
// still runs, and that tracks the connections it accepted.
type retiringListener struct {
	net.Listener
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change below
	begun   map[*trackedConn]bool
	closed  bool // Accept has returned for the listener's close: no accept is under way
}

func newRetiringListener(l net.Listener) *retiringListener {
	return &retiringListener{Listener: l, changed: make(chan struct{}), begun: map[*trackedConn]bool{}}
}

func (l *retiringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			l.update(func() { l.closed = true })
		}
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.update(func() { l.begun[tc] = false })
	return tc, nil
}

// update changes the set of connections under the lock and wakes waiters.
func (l *retiringListener) update(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
}

// await waits until the server's Accept has seen the close and done holds
// for the set of connections, or deadline.
func (l *retiringListener) await(deadline time.Time, done func(map[*trackedConn]bool) bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		l.mu.Lock()
		ok, changed := l.closed && done(l.begun), l.changed
		l.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}

// trackedConn is a connection a retiringListener accepted.
type trackedConn struct {
	net.Conn
	l    *retiringListener
	once sync.Once
}

func (c *trackedConn) begin() {
	c.once.Do(func() { c.l.update(func() { c.l.begun[c] = true }) })
}

func (c *trackedConn) Read(b []byte) (int, error) {
	c.begin()
	return c.Conn.Read(b)
}

func (c *trackedConn) Write(b []byte) (int, error) {
	c.begin()
	return c.Conn.Write(b)
}

func (c *trackedConn) Close() error {
	c.begin()
	c.l.update(func() { delete(c.l.begun, c) })
	return c.Conn.Close()
}

// SyscallConn keeps the socket options within reach of the server.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) { return RawConn(c.Conn) }

// RawConn is the socket under c, for a wrapper of a connection that
// embeds net.Conn and so hides its SyscallConn (grpc-go reads socket
// options through syscall.Conn).
func RawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T: %w", c, errors.ErrUnsupported)
	}
	return sc.SyscallConn()
}

// StopAccepting closes lis, a listener on a given socket, so that its
// server's Accept ends while the server goes on with the connections it
// has; the socket stays open in the processes that share it.
func StopAccepting(lis net.Listener) {
	if l, ok := lis.(*retiringListener); ok {
		l.Listener.Close() //nolint:errcheck // Accept reports the close
	}
}

// AwaitBegun waits, up to deadline, until the server has read from or
// written to every connection lis accepted (gRPC: past the check that would
// close it at GracefulStop). It reports whether they all have.
func AwaitBegun(lis net.Listener, deadline time.Time) bool {
	l, ok := lis.(*retiringListener)
	return !ok || l.await(deadline, func(conns map[*trackedConn]bool) bool {
		for _, begun := range conns {
			if !begun {
				return false
			}
		}
		return true
	})
}

// AwaitClosed waits, up to deadline, until every connection lis accepted is
// closed (HTTP with keep-alives off: each one's last request answered). It
// reports whether they all are.
func AwaitClosed(lis net.Listener, deadline time.Time) bool {
	l, ok := lis.(*retiringListener)
	return !ok || l.await(deadline, func(conns map[*trackedConn]bool) bool { return len(conns) == 0 })
}

// CloseConns closes every connection lis accepted that is still open, for
// a stop that cannot wait for them: grpc-go's Stop waits for the handshake
// of each connection it accepted, and one that sent nothing ends it only
// at the connection timeout (120s).
func CloseConns(lis net.Listener) {
	l, ok := lis.(*retiringListener)
	if !ok {
		return
	}
	l.mu.Lock()
	conns := make([]*trackedConn, 0, len(l.begun))
	for c := range l.begun {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close() //nolint:errcheck // closing is all that is wanted
	}
}
