package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/dns"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/endpointslices"
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
// its servers, or that lost them all, failing for up to 30s. (In a cluster
// the client watches the Service's EndpointSlices instead: kubernetes:///.)
const dnsResolutionInterval = 2 * time.Second

// run starts the client with the CLIENT_* configuration and calls the
// server until SIGINT or SIGTERM, or for CLIENT_DURATION when set.
func run(args []string, stdout, stderr io.Writer) error {
	var cfg Config
	ctx, p, err := platform.Start("client", envPrefix, &cfg, args, stdout, stderr)
	if err != nil {
		return err
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	open := p.Listeners()
	metricsLis := open.Listen(ctx, "metrics", cfg.MetricsPort)
	debugLis := open.Debug(ctx, cfg.DebugPort)
	if err := open.Err(p.Log); err != nil {
		return p.Stop(err)
	}
	conn, slices, err := dial(cfg, p)
	if err != nil {
		return p.Stop(err)
	}
	defer conn.Close()
	metrics := platform.NewMetricsServer(p.Log, p.Registry)

	c := newCaller(foopb.NewFooClient(conn), cfg, p.Log, p.Registry, p.Tracing.Tracer("client"))
	calls, stopCalls := context.WithCancel(ctx)
	defer stopCalls()
	if slices != nil {
		awaitResolved(ctx, conn, slices, p.Log)
	}
	metrics.SetReady(true)
	platform.NotifyReady(p.Log)
	p.Log.Info("calling echo", zap.String("event", "calling"), zap.String("target", cfg.ServerAddr), zap.Float64("rate", cfg.Rate), zap.Int("concurrency", cfg.Concurrency))
	return p.Stop(platform.Serve(ctx,
		platform.Actor{Run: func() error { return c.run(calls) }, Stop: func(error) { stopCalls() }},
		metrics.Actor(ctx, metricsLis),
		platform.DebugActor(ctx, p.Log, debugLis),
	))
}

// resolvedWait bounds how long a new client process waits, before it
// reports ready, for its kubernetes:/// resolver to know the servers: its
// first list of the Service's EndpointSlices answered or failed. Within the
// supervisor's start timeout (10s), which would otherwise kill it.
const resolvedWait = 5 * time.Second

// awaitResolved waits until the resolver knows what it can know, at most
// resolvedWait: a process that replaces one (a live update) must not report
// ready, and take over, before it has the addresses the old one has.
func awaitResolved(ctx context.Context, conn *grpc.ClientConn, b *endpointslices.Builder, log *zap.Logger) {
	conn.Connect() // grpc-go's channel starts idle: this builds the resolver
	select {
	case <-b.Resolved():
	case <-ctx.Done():
	case <-time.After(resolvedWait):
		log.Warn("no answer from the Kubernetes API yet: calling without the Service's endpoints", zap.Duration("waited", resolvedWait))
	}
}

// dial creates the client's connection to cfg.ServerAddr: round robin over
// every address the target resolves to, retries, quick reconnection, each
// call traced and measured (grpc_client_* with trace-id exemplars).
func dial(cfg Config, p *platform.Program) (*grpc.ClientConn, *endpointslices.Builder, error) {
	slices, err := slicesResolver(cfg.ServerAddr, p.Log.Named("resolver"))
	if err != nil {
		return nil, nil, err
	}
	var resolvers []resolver.Builder
	if slices != nil {
		resolvers = append(resolvers, slices)
	}
	clMetrics := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(platform.HandlingTime...))
	p.Registry.MustRegister(clMetrics)
	exemplars := platform.NewExemplarSampler(platform.ExemplarInterval)
	interceptors := []grpc.UnaryClientInterceptor{clMetrics.UnaryClientInterceptor(grpcprom.WithExemplarFromContext(exemplars.Exemplar))}
	if p.Log.Core().Enabled(zapcore.DebugLevel) { // its fields cost even when not written
		interceptors = append(interceptors, logging.UnaryClientInterceptor(platform.InterceptorLogger(p.Log), platform.RPCLogOptions()...))
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
		grpc.WithResolvers(resolvers...),
		grpc.WithStatsHandler(p.Tracing.ClientHandler()),
		grpc.WithChainUnaryInterceptor(interceptors...),
		// While no server is reachable (every pod restarting at once after
		// a live update, or a single server restarting), a call waits for
		// one within its deadline instead of failing at once.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("create gRPC client for %q: %w", cfg.ServerAddr, err)
	}
	return conn, slices, nil
}

// slicesResolver returns the resolver the target needs beyond grpc-go's
// own: for kubernetes:///, one that follows the Service's EndpointSlices
// with the pod's service account (package endpointslices), made now so
// that a client outside a pod says so at start rather than failing every
// call. Nil for any other target.
func slicesResolver(target string, log *zap.Logger) (*endpointslices.Builder, error) {
	if !strings.HasPrefix(target, endpointslices.Scheme+"://") {
		return nil, nil
	}
	b, err := endpointslices.NewBuilder(log)
	if err != nil {
		return nil, fmt.Errorf("%s_SERVER_ADDR=%s: the Kubernetes API is not reachable from here: %w", envPrefix, target, err)
	}
	return b, nil
}
