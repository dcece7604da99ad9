package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/oklog/run"
	"go.uber.org/zap"
)

// Actor is one part of a running program, oklog/run's pair: Run works until
// it fails or Stop makes it return; Stop gets the error that ends the
// program (nil when its context ended).
type Actor struct {
	Run  func() error
	Stop func(error)
}

// Serve runs the actors together until ctx ends or one of them returns,
// then stops each, in the order given, and waits for all to return. It
// returns the first actor's error, nil when ctx ended.
func Serve(ctx context.Context, actors ...Actor) error {
	var g run.Group
	done := make(chan struct{})
	g.Add(func() error {
		select {
		case <-ctx.Done():
		case <-done:
		}
		return nil
	}, func(error) { close(done) })
	for _, a := range actors {
		if a.Run != nil {
			g.Add(a.Run, a.Stop)
		}
	}
	return g.Run()
}

// Listeners opens a program's TCP listeners one after the other; if one
// fails, Err closes those already open.
type Listeners struct {
	open   []net.Listener
	fields []zap.Field
	err    error
}

// Listen listens on port of every interface (0: any free one), for what.
func (l *Listeners) Listen(ctx context.Context, what string, port int) net.Listener {
	return l.listen(ctx, what, net.JoinHostPort("", strconv.Itoa(port)))
}

// Debug listens on the debug port, on loopback only: profiles reveal the
// program's insides, so they are reached through a port-forward (kubectl's
// and Tilt's connect to the pod's loopback), never from the pod network. It
// returns nil when p is off.
func (l *Listeners) Debug(ctx context.Context, p DebugPort) net.Listener {
	if !p.On {
		return nil
	}
	return l.listen(ctx, "debug", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)))
}

func (l *Listeners) listen(ctx context.Context, what, addr string) net.Listener {
	if l.err != nil {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		l.err = fmt.Errorf("listen for %s: %w", what, err)
		return nil
	}
	l.open = append(l.open, lis)
	l.fields = append(l.fields, zap.Stringer(what, lis.Addr()))
	return lis
}

// Err reports the first listener that failed, after closing the others; or
// logs the addresses listened on (the line the tests read them from).
func (l *Listeners) Err(log *zap.Logger) error {
	if l.err != nil {
		var errs []error
		for _, lis := range l.open {
			errs = append(errs, lis.Close())
		}
		return errors.Join(append([]error{l.err}, errs...)...)
	}
	log.Info("listening", l.fields...)
	return nil
}
