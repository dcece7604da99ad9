package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"example.com/grpc-metrics/services/internal/platform"
)

// listeners are the server's listeners; serve owns and closes them.
type listeners struct {
	grpc, metrics net.Listener
	debug         net.Listener // nil unless SERVER_DEBUG_PORT is set
	// linger is how long a hand-over's drain lets calls arrive after its
	// GOAWAY before it stops once none is in flight.
	linger time.Duration
}

// run starts the server with the SERVER_* configuration and serves until
// SIGINT or SIGTERM.
func run(args []string, stdout, stderr io.Writer) error {
	var cfg Config
	ctx, p, err := platform.Start("server", envPrefix, &cfg, args, stdout, stderr)
	if err != nil {
		return err
	}
	open := p.Listeners()
	lis := listeners{
		grpc:    open.Listen(ctx, "grpc", cfg.GRPCPort),
		metrics: open.Listen(ctx, "metrics", cfg.MetricsPort),
		debug:   open.Debug(ctx, cfg.DebugPort),
		linger:  handoverLinger,
	}
	if p.SuccessorWaits() {
		lis.linger = handoverLingerWaited
	}
	if err := open.Err(p.Log); err != nil {
		return p.Stop(err)
	}
	srv := newGRPCServer(cfg, p.Log, p.Registry, p.Tracing)
	metrics := platform.NewMetricsServer(p.Log, p.Registry)
	return p.Stop(serve(ctx, cfg, p.Log, srv, metrics, lis))
}

// serve serves gRPC, metrics and, when it has a listener, pprof until ctx
// ends. When a new process took over the sockets (platform.HandedOver), it
// stays SERVING and lets every call and connection finish, for at most
// ShutdownTimeout. Otherwise it shuts down:
//
//  1. health turns NOT_SERVING (the liveness check excepted) and /readyz 503;
//  2. it waits ShutdownDelay, zero unless something routes calls here by a
//     readiness it must see change first (in Kubernetes the pod's preStop
//     hook waits instead, so a restart of the process alone is immediate);
//  3. it drains the calls in progress for at most ShutdownTimeout (see drain);
//  4. it closes the metrics and debug listeners.
//
// A browser's HTTP/1 request to the gRPC port gets a page on how to call it
// (answerBrowsers). The server reports SERVING once its listeners accept
// connections: they queue connections from the moment they exist.
func serve(ctx context.Context, cfg Config, log *zap.Logger, srv *grpcServer, metrics *platform.MetricsServer, lis listeners) error {
	srv.setServing()
	metrics.SetReady(true)
	log.Info("serving", zap.String("event", "serving"))
	platform.NotifyReady(log)
	return platform.Serve(ctx,
		platform.Actor{
			Run: func() error {
				if err := srv.Serve(answerBrowsers(lis.grpc, log)); err != nil {
					return fmt.Errorf("serve gRPC: %w", err)
				}
				return nil
			},
			Stop: func(error) {
				if platform.HandedOver(ctx) {
					began := time.Now()
					deadline := began.Add(cfg.ShutdownTimeout)
					platform.StopAccepting(lis.grpc)
					platform.AwaitBegun(lis.grpc, deadline)
					drain(srv, lis.grpc, time.Until(deadline), log, lis.linger)
					log.Info("drained", zap.Duration("grpc", time.Since(began)))
					return
				}
				srv.setDraining()
				metrics.SetReady(false)
				if ctx.Err() != nil && cfg.ShutdownDelay > 0 {
					log.Info("not serving; waiting before draining", zap.String("event", "shutdown_delay"), zap.Duration("delay", cfg.ShutdownDelay))
					time.Sleep(cfg.ShutdownDelay)
				}
				began := time.Now()
				log.Info("draining calls in progress", zap.String("event", "draining"), zap.Duration("timeout", cfg.ShutdownTimeout))
				drain(srv, lis.grpc, cfg.ShutdownTimeout, log, 0)
				srv.health.Shutdown() // for a watcher that outlives the connection
				log.Info("drained", zap.Duration("grpc", time.Since(began)))
			},
		},
		metrics.Actor(ctx, lis.metrics),
		platform.DebugActor(ctx, log, lis.debug),
	)
}

// drainPoll is how often the drain looks whether calls are still in flight:
// a restart in place waits at most this long once the last call is done.
const drainPoll = 5 * time.Millisecond

// A process retired by a hand-over lets calls arrive for a while after its
// GOAWAY before it stops once none is in flight: a call a client sent
// before the GOAWAY reached it is on its way for no more than a round trip
// (through a port-forward to a remote cluster, tens of milliseconds). Its
// successor serves meanwhile; under a debugger, though, the successor starts
// only once this process has exited, and every save waits for the linger.
const (
	handoverLinger       = 250 * time.Millisecond
	handoverLingerWaited = 50 * time.Millisecond
)

// drain stops srv the way grpc-go's gracefulstop example does, GracefulStop
// with Stop as the fallback after timeout; and, from idleAfter on, as soon as
// no call is in flight. GracefulStop alone waits for every connection to
// close, and a connection whose peer is gone but not yet closed (a
// port-forward keeps the pod's end of a finished grpcurl call open for about
// a second) never answers the GOAWAY ping: grpc-go would wait for it for up
// to 5s, while the next process waits. Connections that carry no call lose
// nothing when they are closed; streams (reflection, health watches) are
// cut. At a shutdown idleAfter is 0: nothing sends calls here any more. A
// process retired by a hand-over waits a linger first, so that a call
// a client already sent on a connection GracefulStop is closing still gets
// its answer.
func drain(srv *grpcServer, lis net.Listener, timeout time.Duration, log *zap.Logger, idleAfter time.Duration) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	began := time.Now()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for {
		select {
		case <-done:
			return
		case <-poll.C:
			if time.Since(began) < idleAfter || srv.calls.Load() > 0 {
				continue
			}
		case <-deadline.C:
			log.Warn("calls still running after the shutdown timeout; cancelling them", zap.Duration("timeout", timeout))
		}
		go srv.Stop()
		select {
		case <-done:
		case <-time.After(stopGrace):
			// Stop waits for every connection's handshake to end, and a
			// connection that sent nothing ends its handshake only at
			// grpc-go's connection timeout (120s). The process is ending:
			// it needs nothing from that connection.
			log.Warn("a connection is still in its handshake; closing it", zap.Duration("after", stopGrace))
			platform.CloseConns(lis)
			<-done
		}
		return
	}
}

// stopGrace bounds the wait for grpc-go's Stop (closing every connection,
// ending every handler): a few milliseconds, unless a connection sent no
// preface yet.
const stopGrace = 500 * time.Millisecond
