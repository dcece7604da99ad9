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

// run listens on the configured ports and serves until ctx ends.
func run(ctx context.Context, cfg Config, log *zap.Logger) error {
	reg := platform.NewRegistry("echo_server")
	srv := newGRPCServer(cfg, log, reg)
	metrics := platform.NewMetricsServer(log, reg)

	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(cfg.GRPCPort)))
	if err != nil {
		return fmt.Errorf("listen for gRPC: %w", err)
	}
	metricsLis, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(cfg.MetricsPort)))
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("listen for metrics: %w", err)
	}
	log.Info("listening", zap.Stringer("grpc", grpcLis.Addr()), zap.Stringer("metrics", metricsLis.Addr()))
	return serve(ctx, cfg, log, srv, metrics, grpcLis, metricsLis)
}

// serve serves gRPC and metrics on their listeners, which it owns, until ctx
// ends, then shuts down:
//
//  1. health turns NOT_SERVING (the liveness check excepted) and /readyz 503;
//  2. it waits ShutdownDelay, zero unless something routes calls here by a
//     readiness it must see change first (in Kubernetes the pod's preStop
//     hook waits instead, so a restart of the process alone is immediate);
//  3. it drains calls in progress for at most ShutdownTimeout, then cuts them;
//  4. it closes the metrics listener.
//
// The server reports SERVING once both listeners accept connections.
func serve(ctx context.Context, cfg Config, log *zap.Logger, srv *grpcServer, metrics *platform.MetricsServer, grpcLis, metricsLis net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(grpcLis); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error { return metrics.Serve(metricsLis) })
	// The listeners queue connections from the moment they exist, so both
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
	sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	merr := metrics.Shutdown(sctx)
	log.Info("drained", zap.Duration("grpc", drained), zap.Duration("metrics", time.Since(began)-drained))
	if err := g.Wait(); err != nil {
		return err
	}
	return merr
}

// drain stops srv gracefully, cutting the calls still running after timeout.
func drain(srv *grpcServer, timeout time.Duration, log *zap.Logger) {
	log.Info("draining calls in progress", zap.Duration("timeout", timeout))
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("calls still running after the shutdown timeout; cancelling them", zap.Duration("timeout", timeout))
		srv.Stop()
		<-done
	}
}
