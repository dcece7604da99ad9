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

// Listeners opens a program's TCP listeners one after the other, or takes
// those it inherited from a supervisor (Supervise); if one fails, Err closes
// those already open.
type Listeners struct {
	inherited map[string]net.Listener
	taken     []namedListener
	err       error
}

type namedListener struct {
	name string
	lis  net.Listener
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
	lis, ok := l.inherited[what]
	if ok {
		delete(l.inherited, what)
		lis = newRetiringListener(lis)
	} else {
		var lc net.ListenConfig
		var err error
		if lis, err = lc.Listen(ctx, "tcp", addr); err != nil {
			l.err = fmt.Errorf("listen for %s: %w", what, err)
			return nil
		}
	}
	l.taken = append(l.taken, namedListener{name: what, lis: lis})
	return lis
}

// Err reports the first listener that failed, after closing the others; or
// logs the addresses listened on (the line the tests read them from). An
// inherited socket that the configuration does not ask for is closed.
func (l *Listeners) Err(log *zap.Logger) error {
	var errs []error
	for name, lis := range l.inherited {
		log.Warn("closing an inherited socket that the configuration does not use", zap.String("name", name))
		errs = append(errs, lis.Close())
	}
	if l.err != nil {
		for _, t := range l.taken {
			errs = append(errs, t.lis.Close())
		}
		return errors.Join(append([]error{l.err}, errs...)...)
	}
	fields := make([]zap.Field, len(l.taken))
	for i, t := range l.taken {
		fields[i] = zap.Stringer(t.name, t.lis.Addr())
	}
	log.Info("listening", fields...)
	return errors.Join(errs...)
}
