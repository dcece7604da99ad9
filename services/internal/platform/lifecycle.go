package platform

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/run"
	"go.uber.org/zap"
)

// Actor is one part of a running program, oklog/run's pair: Run works until
// it fails or Stop makes it return; Stop gets the error that ends the
// program (the context's when it ended).
type Actor struct {
	Run  func() error
	Stop func(error)
}

// Serve runs the actors together until ctx ends or one of them returns,
// then stops each, in the order given, and waits for all to return. It
// returns the first actor's error, nil when ctx ended.
func Serve(ctx context.Context, actors ...Actor) error {
	var g run.Group
	g.Add(run.ContextHandler(ctx))
	for _, a := range actors {
		if a.Run != nil {
			g.Add(a.Run, a.Stop)
		}
	}
	if err := g.Run(); ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
		return err
	}
	return nil // ctx ended: a stop, not a failure
}

// Listeners opens a program's TCP listeners one after the other, on every
// interface or on each of the hosts the configuration names
// (PREFIX_LISTEN_HOSTS), or takes those the program was given by name
// (activation.go); if one fails, Err closes those already open.
type Listeners struct {
	given map[string][]net.Listener
	hosts []string
	taken []namedListener
	err   error
}

type namedListener struct {
	name  string
	lis   net.Listener   // what the server accepts from
	parts []net.Listener // its sockets, one for each host
}

// Listen listens on port (0: any free one) for what: of every interface, or
// of each host listened on, all on the same port.
func (l *Listeners) Listen(ctx context.Context, what string, port int) net.Listener {
	return l.listen(ctx, what, l.hosts, port)
}

// Debug listens on the debug port, on loopback only: profiles reveal the
// program's insides, so they are reached through a port-forward (kubectl's
// and Tilt's connect to the pod's loopback), never from the pod network. It
// returns nil when p is off.
func (l *Listeners) Debug(ctx context.Context, p DebugPort) net.Listener {
	if !p.On {
		return nil
	}
	return l.listen(ctx, "debug", []string{"127.0.0.1"}, p.Port)
}

func (l *Listeners) listen(ctx context.Context, what string, hosts []string, port int) net.Listener {
	if l.err != nil {
		return nil
	}
	if l.given != nil {
		return l.take(what, port)
	}
	if len(hosts) == 0 {
		hosts = []string{""}
	}
	var lc net.ListenConfig
	var parts []net.Listener
	for _, h := range hosts {
		lis, err := lc.Listen(ctx, "tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			for _, p := range parts {
				p.Close() //nolint:errcheck // the listen error is the one to report
			}
			l.err = fmt.Errorf("listen for %s: %w", what, err)
			return nil
		}
		// Any free port: the same one on every host.
		port = lis.Addr().(*net.TCPAddr).Port
		parts = append(parts, lis)
	}
	lis := newRetiringListener(joinListeners(parts))
	l.taken = append(l.taken, namedListener{name: what, lis: lis, parts: parts})
	return lis
}

// take takes the given sockets named what, which must listen on port
// unless it is 0 (any). A program given its sockets opens none itself: the
// next process could not open it again while this one serves on it.
func (l *Listeners) take(what string, port int) net.Listener {
	parts, ok := l.given[what]
	if !ok {
		l.err = fmt.Errorf("listen for %s: the program was given sockets, none of them named %q (given: %s)", what, what, strings.Join(slices.Sorted(maps.Keys(l.given)), ", "))
		return nil
	}
	for _, p := range parts {
		if a, ok := p.Addr().(*net.TCPAddr); !ok || (port != 0 && a.Port != port) {
			l.err = fmt.Errorf("listen for %s: the socket given for it listens on %s, not on port %d as configured", what, p.Addr(), port)
			return nil
		}
	}
	delete(l.given, what)
	lis := newRetiringListener(joinListeners(parts))
	l.taken = append(l.taken, namedListener{name: what, lis: lis, parts: parts})
	return lis
}

// Err reports the first listener that failed, after closing the others and
// the sockets given and not taken; or logs the addresses listened on (the
// line the tests read them from). A given socket that the configuration
// does not ask for is closed.
func (l *Listeners) Err(log *zap.Logger) error {
	var errs []error
	for name, parts := range l.given {
		if l.err == nil {
			log.Warn("closing a given socket that the configuration does not use", zap.String("name", name))
		}
		for _, p := range parts {
			errs = append(errs, p.Close())
		}
	}
	if l.err != nil {
		for _, t := range l.taken {
			errs = append(errs, t.lis.Close())
		}
		return errors.Join(append([]error{l.err}, errs...)...)
	}
	fields := make([]zap.Field, len(l.taken), len(l.taken)+1)
	for i, t := range l.taken {
		addrs := make([]string, len(t.parts))
		for j, p := range t.parts {
			addrs[j] = p.Addr().String()
		}
		fields[i] = zap.String(t.name, strings.Join(addrs, ","))
	}
	log.Info("listening", append(fields, zap.String("event", "listening"))...)
	return errors.Join(errs...)
}

// joinListeners accepts from every listener in ls, which all serve the same
// port on several hosts, as one. Its address is the first's.
func joinListeners(ls []net.Listener) net.Listener {
	if len(ls) == 1 {
		return ls[0]
	}
	j := &joinedListener{ls: ls, conns: make(chan acceptResult), closed: make(chan struct{})}
	for _, l := range ls {
		go j.accept(l)
	}
	return j
}

type joinedListener struct {
	ls     []net.Listener
	conns  chan acceptResult
	closed chan struct{}
	once   sync.Once
}

type acceptResult struct {
	conn net.Conn
	err  error
}

// Retrying an accept that failed (too many open files, say), as net/http
// and grpc-go do: after 5ms, doubling up to 1s.
const (
	acceptRetryFirst = 5 * time.Millisecond
	acceptRetryMax   = time.Second
)

// accept passes on what l accepts until l is closed. An error is passed
// on too; as a server does, it then waits before the next accept, longer
// after each error in a row, so that one listener that fails for a while
// (too many open files) neither spins nor stops the others.
func (j *joinedListener) accept(l net.Listener) {
	var wait time.Duration
	for {
		c, err := l.Accept()
		if err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		select {
		case j.conns <- acceptResult{c, err}:
		case <-j.closed:
			if c != nil {
				c.Close() //nolint:errcheck // accepted after the close: not served
			}
			return
		}
		if err == nil {
			wait = 0
			continue
		}
		wait = min(max(2*wait, acceptRetryFirst), acceptRetryMax)
		select {
		case <-time.After(wait):
		case <-j.closed:
			return
		}
	}
}

func (j *joinedListener) Accept() (net.Conn, error) {
	select {
	case r := <-j.conns:
		return r.conn, r.err
	case <-j.closed:
		return nil, net.ErrClosed
	}
}

// Close closes every listener; Accept then returns net.ErrClosed.
func (j *joinedListener) Close() error {
	var errs []error
	j.once.Do(func() {
		close(j.closed)
		for _, l := range j.ls {
			errs = append(errs, l.Close())
		}
	})
	return errors.Join(errs...)
}

func (j *joinedListener) Addr() net.Addr { return j.ls[0].Addr() }
