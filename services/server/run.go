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

// run serves until ctx ends, then shuts down gracefully: health turns
// NOT_SERVING, the server waits ShutdownDelay for load balancers to notice,
// then drains calls in progress for at most ShutdownTimeout before cutting
// them, and finally closes the metrics listener.
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

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("serving gRPC", zap.String("addr", grpcLis.Addr().String()))
		if err := srv.Serve(grpcLis); err != nil {
			return fmt.Errorf("serve gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error { return metrics.Serve(metricsLis) })
	g.Go(func() error {
		<-gctx.Done()
		srv.setDraining()
		metrics.SetReady(false)
		if ctx.Err() != nil && cfg.ShutdownDelay > 0 {
			log.Info("not serving; waiting before draining", zap.Duration("delay", cfg.ShutdownDelay))
			time.Sleep(cfg.ShutdownDelay)
		}
		drain(srv, cfg.ShutdownTimeout, log)
		srv.health.Shutdown() // for a watcher that outlives the connection
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		return metrics.Shutdown(sctx)
	})

	srv.setServing()
	metrics.SetReady(true)
	return g.Wait()
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
