package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver/dns"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// serviceConfig balances calls over every address the target resolves to
// (with a headless Service, every server pod) and retries UNAVAILABLE, which
// a call gets when its server is going away or not reachable yet.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "foo.Foo"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// reconnectBackoff retries a lost server quickly: grpc-go's default starts
// at 1s and grows to 120s, far too slow for a server restarted in place by a
// live update, which listens again within tens of milliseconds.
var reconnectBackoff = backoff.Config{
	BaseDelay:  25 * time.Millisecond, // then 40, 64, 102ms...: a restart in place is back within ~0.1s
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   2 * time.Second, // a returning server is called again within ~2s
}

// dnsResolutionInterval is the shortest time between two DNS lookups of a
// dns:/// target. grpc-go's default, 30s, leaves a client that started before
// its servers, or that lost them all, failing for up to 30s.
const dnsResolutionInterval = 2 * time.Second

// exemplarInterval spaces the trace-id exemplars of the client's latency
// histogram (see platform.ExemplarSampler).
const exemplarInterval = 100 * time.Millisecond

// metricsShutdownTimeout bounds the wait for a scrape in progress at exit.
const metricsShutdownTimeout = 5 * time.Second

// run calls the server until ctx ends, or for cfg.Duration when set.
func run(ctx context.Context, cfg Config, log *zap.Logger) error {
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	tracing, err := platform.NewTracing(ctx, "client", log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tracing.Shutdown(); err != nil {
			log.Warn("the last spans were not exported", zap.Error(err))
		}
	}()
	reg := platform.NewRegistry("echo_client")
	clMetrics := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
		platform.NativeHistogram,
	))
	reg.MustRegister(clMetrics)

	exemplars := platform.NewExemplarSampler(exemplarInterval)
	interceptors := []grpc.UnaryClientInterceptor{clMetrics.UnaryClientInterceptor(grpcprom.WithExemplarFromContext(exemplars.Exemplar))}
	if log.Core().Enabled(zapcore.DebugLevel) { // its fields cost even when not written
		interceptors = append(interceptors, logging.UnaryClientInterceptor(platform.InterceptorLogger(log), platform.RPCLogOptions()...))
	}
	dns.SetMinResolutionInterval(dnsResolutionInterval)
	conn, err := grpc.NewClient(cfg.ServerAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			// A pod that vanishes without closing its connections (node or
			// network gone) is noticed in about 12s rather than TCP's minutes.
			Time:    10 * time.Second, // the shortest grpc-go allows
			Timeout: 2 * time.Second,
		}),
		grpc.WithStatsHandler(tracing.ClientHandler()),
		grpc.WithChainUnaryInterceptor(interceptors...),
		// While no server is reachable (every pod restarting at once after
		// a live update, or a single server restarting), a call waits for
		// one within its deadline instead of failing at once.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
	)
	if err != nil {
		return fmt.Errorf("create gRPC client for %q: %w", cfg.ServerAddr, err)
	}
	defer conn.Close()

	var lc net.ListenConfig
	metricsLis, err := lc.Listen(ctx, "tcp", net.JoinHostPort("", strconv.Itoa(cfg.MetricsPort)))
	if err != nil {
		return fmt.Errorf("listen for metrics: %w", err)
	}
	debugLis, err := platform.ListenDebug(ctx, cfg.DebugPort)
	if err != nil {
		metricsLis.Close()
		return err
	}
	fields := []zap.Field{zap.Stringer("metrics", metricsLis.Addr())}
	if debugLis != nil {
		fields = append(fields, zap.Stringer("debug", debugLis.Addr()))
	}
	log.Info("listening", fields...)
	metrics := platform.NewMetricsServer(log, reg)
	c := newCaller(foopb.NewFooClient(conn), cfg, log, reg, tracing.Tracer("client"))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return metrics.Serve(metricsLis) })
	if debugLis != nil {
		debug := platform.NewDebugServer(log)
		g.Go(func() error { return debug.Serve(debugLis) })
		g.Go(func() error {
			<-gctx.Done()
			return debug.Close()
		})
	}
	g.Go(func() error {
		log.Info("calling echo", zap.String("target", cfg.ServerAddr), zap.Float64("rate", cfg.Rate), zap.Int("concurrency", cfg.Concurrency))
		return c.run(gctx)
	})
	g.Go(func() error {
		<-gctx.Done()
		metrics.SetReady(false)
		sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		defer cancel()
		return metrics.Shutdown(sctx)
	})
	metrics.SetReady(true)
	return g.Wait()
}
