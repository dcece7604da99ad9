package main

import (
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// livenessService is the health-check name that answers SERVING for as long
// as the process serves, shutdown included: Kubernetes' liveness probe asks for
// it, so a pod that is draining (NOT_SERVING for "" and foo.Foo, which the
// readiness probe asks for) is not killed for it.
const livenessService = "liveness"

// streamWorkers is how many calls at once run on goroutines that grpc-go
// keeps (grpc.NumStreamWorkers) instead of a new goroutine each. A new
// goroutine's stack grows, by copying, as the stats handler and the
// interceptors call deeper: about 5% of the server's CPU time per call
// under scripts/bench's load. A kept goroutine's stack stays grown (grpc-go
// starts it anew every 65,536 calls). Calls beyond these get a goroutine of
// their own, as without workers.
const streamWorkers = 16 // goroutines; 4 saved nothing under 8 concurrent callers, 8 to 64 alike

// grpcServer is the gRPC server with the services it carries.
type grpcServer struct {
	*grpc.Server
	health *health.Server
	calls  atomic.Int64 // unary calls being handled, of every service (callInterceptor)
}

// newGRPCServer builds the gRPC server: foo.Foo behind the tracing stats
// handler (each call's server span, whose ids its log lines and exemplars
// carry) and the call-log, metrics and panic-recovery interceptors (plus
// per-call debug logging when the level is debug), the health service
// (NOT_SERVING until setServing) and, when enabled, reflection. Calls run on
// streamWorkers kept goroutines. reg receives the echo and the standard
// grpc_server_* metrics.
func newGRPCServer(cfg Config, log *zap.Logger, reg prometheus.Registerer, tracing *platform.Tracing) *grpcServer {
	srvMetrics := newServerMetrics(reg)
	exemplars := platform.NewExemplarSampler(platform.ExemplarInterval)
	gs := &grpcServer{}

	panicked := func(p any) error {
		log.Error("recovered from a panic in a handler", zap.Any("panic", p), zap.Stack("stack"))
		return status.Error(codes.Internal, "internal error")
	}
	unary := []grpc.UnaryServerInterceptor{
		callInterceptor(log, cfg.SlowCall, &gs.calls),
		srvMetrics.UnaryServerInterceptor(grpcprom.WithExemplarFromContext(exemplars.Exemplar)),
	}
	stream := []grpc.StreamServerInterceptor{srvMetrics.StreamServerInterceptor()}
	// The logging interceptor builds its fields before it asks the logger's
	// level: half the instrumentation's cost per call. Install it only when
	// its debug lines can be written.
	if log.Core().Enabled(zapcore.DebugLevel) {
		unary = append(unary, logging.UnaryServerInterceptor(platform.InterceptorLogger(log), platform.RPCLogOptions()...))
		stream = append(stream, logging.StreamServerInterceptor(platform.InterceptorLogger(log), platform.RPCLogOptions()...))
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(panicked)))
	stream = append(stream, recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(panicked)))

	s := grpc.NewServer(
		grpc.StatsHandler(tracing.ServerHandler()),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Clients balance over the pods they resolved when they connected;
			// ending each connection after a while makes them resolve again
			// and spread over pods added since (a scale-up, a rollout).
			MaxConnectionAge:      cfg.MaxConnAge,
			MaxConnectionAgeGrace: 10 * time.Second, // calls in flight may finish
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: 5 * time.Second, // below the clients' 10s keepalive pings
		}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Stop returns once every handler has: the spans, log lines and
		// metrics of calls it cancelled are written before the tracer and
		// the logger are flushed.
		grpc.WaitForHandlers(true),
	)
	foopb.RegisterFooServer(s, &echoServer{maxNameBytes: cfg.MaxNameBytes, metrics: newEchoMetrics(reg)})

	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(foopb.Foo_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(livenessService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	if cfg.Reflection {
		reflection.Register(s)
	}
	srvMetrics.InitializeMetrics(s)
	gs.Server, gs.health = s, hs
	return gs
}

// newServerMetrics registers the standard grpc_server_* metrics of
// go-grpc-middleware's provider in reg, with the handling-time histogram
// native and classic.
func newServerMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(platform.HandlingTime...))
	reg.MustRegister(m)
	return m
}

// setServing marks the server, foo.Foo and the liveness check SERVING.
func (s *grpcServer) setServing() {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(foopb.Foo_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(livenessService, healthpb.HealthCheckResponse_SERVING)
}

// setDraining marks the server and foo.Foo NOT_SERVING, so load balancers
// stop sending calls, while the liveness check stays SERVING.
func (s *grpcServer) setDraining() {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(foopb.Foo_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
}
