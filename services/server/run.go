package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"example.com/grpc-metrics/services/internal/platform"
)

// metricsShutdownTimeout bounds the wait for a scrape in progress at exit.
const metricsShutdownTimeout = 5 * time.Second

// drainPoll is how often the drain looks whether calls are still in flight:
// a restart in place waits at most this long once the last call is done.
const drainPoll = 5 * time.Millisecond

// listeners are the server's listeners; serve owns and closes them.
type listeners struct {
	grpc, metrics net.Listener
	debug         net.Listener // nil unless SERVER_DEBUG_PORT is set
}

// run listens on the configured ports and serves until ctx ends.
func run(ctx context.Context, cfg Config, log *zap.Logger) error {
	tracing, err := platform.NewTracing(ctx, "server", log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tracing.Shutdown(); err != nil {
			log.Warn("the last spans were not exported", zap.Error(err))
		}
	}()
	reg := platform.NewRegistry("echo_server")
	srv := newGRPCServer(cfg, log, reg, tracing)
	metrics := platform.NewMetricsServer(log, reg)

	var lc net.ListenConfig
	var lis listeners
	if lis.grpc, err = lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(cfg.GRPCPort))); err != nil {
		return fmt.Errorf("listen for gRPC: %w", err)
	}
	if lis.metrics, err = lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(cfg.MetricsPort))); err != nil {
		lis.grpc.Close()
		return fmt.Errorf("listen for metrics: %w", err)
	}
	if lis.debug, err = platform.ListenDebug(ctx, cfg.DebugPort); err != nil {
		lis.grpc.Close()
		lis.metrics.Close()
		return err
	}
	fields := []zap.Field{zap.Stringer("grpc", lis.grpc.Addr()), zap.Stringer("metrics", lis.metrics.Addr())}
	if lis.debug != nil {
		fields = append(fields, zap.Stringer("debug", lis.debug.Addr()))
	}
	log.Info("listening", fields...)
	return serve(ctx, cfg, log, srv, metrics, lis)
}

// serve serves gRPC, metrics and, when it has a listener, pprof until ctx
// ends, then shuts down:
//
//  1. health turns NOT_SERVING (the liveness check excepted) and /readyz 503;
//  2. it waits ShutdownDelay, zero unless something routes calls here by a
//     readiness it must see change first (in Kubernetes the pod's preStop
//     hook waits instead, so a restart of the process alone is immediate);
//  3. it drains the calls in progress for at most ShutdownTimeout (see drain);
//  4. it closes the metrics and debug listeners.
//
// The server reports SERVING once its listeners accept connections.
func serve(ctx context.Context, cfg Config, log *zap.Logger, srv *grpcServer, metrics *platform.MetricsServer, lis listeners) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(lis.grpc); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error { return metrics.Serve(lis.metrics) })
	var debug *platform.DebugServer
	if lis.debug != nil {
		debug = platform.NewDebugServer(log)
		g.Go(func() error { return debug.Serve(lis.debug) })
	}
	// The listeners queue connections from the moment they exist, so the
	// servers take calls as soon as their goroutines run.
	srv.setServing()
	metrics.SetReady(true)
	log.Info("serving")

	<-gctx.Done()
	srv.setDraining()
	metrics.SetReady(false)
	if ctx.Err() != nil && cfg.ShutdownDelay > 0 {
		log.Info("not serving; waiting before draining", zap.Duration("delay", cfg.ShutdownDelay))
		time.Sleep(cfg.ShutdownDelay)
	}
	began := time.Now()
	drain(srv, cfg.ShutdownTimeout, log)
	srv.health.Shutdown() // for a watcher that outlives the connection
	drained := time.Since(began)
	if debug != nil {
		debug.Close() //nolint:errcheck // closing listeners only; nothing to report
	}
	sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	merr := metrics.Shutdown(sctx)
	log.Info("drained", zap.Duration("grpc", drained), zap.Duration("metrics", time.Since(began)-drained))
	if err := g.Wait(); err != nil {
		return err
	}
	return merr
}

// drain stops srv the way grpc-go's gracefulstop example does, GracefulStop
// with Stop as the fallback after timeout, and also stops it as soon as no
// call is in flight. GracefulStop waits for every connection to close, and a
// connection whose peer is gone but not yet closed (a port-forward keeps the
// pod's end of a finished grpcurl call open for about a second) never answers
// the GOAWAY ping: grpc-go would wait for it for up to 5s, while the next
// process cannot listen. Connections that carry no call lose nothing when
// they are closed; streams (reflection, health watches) are cut.
func drain(srv *grpcServer, timeout time.Duration, log *zap.Logger) {
	log.Info("draining calls in progress", zap.Duration("timeout", timeout))
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for {
		select {
		case <-done:
			return
		case <-poll.C:
			if srv.calls.Load() > 0 {
				continue
			}
		case <-deadline.C:
			log.Warn("calls still running after the shutdown timeout; cancelling them", zap.Duration("timeout", timeout))
		}
		srv.Stop()
		<-done
		return
	}
}
