package main

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// The micro benchmarks of one echo call, run by scripts/bench and reported in
// docs/BENCHMARKS.md. Each instrumented variant has a bare baseline over the
// same transport; the cost of the instrumentation is the difference.

// bareEcho is foo.Foo with nothing around it: the baseline.
type bareEcho struct {
	foopb.UnimplementedFooServer
}

func (bareEcho) Echo(_ context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	return &foopb.EchoReply{Message: req.GetName()}, nil
}

// benchLogger is the server's production logger (JSON, sampled) at lvl,
// writing to /dev/null instead of stderr.
func benchLogger(b *testing.B, lvl zapcore.Level) *zap.Logger {
	b.Helper()
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths = []string{os.DevNull}
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	log, err := zc.Build()
	if err != nil {
		b.Fatalf("build logger: %v", err)
	}
	return log
}

// benchTracing is the server's tracing as it runs with an OTLP endpoint, its
// batches handed to an exporter that drops them: the cost of a span up to
// its export.
func benchTracing(b *testing.B) *platform.Tracing {
	b.Helper()
	tracing, err := platform.NewTracing(b.Context(), "server", zap.NewNop(), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	if err != nil {
		b.Fatalf("NewTracing: %v", err)
	}
	b.Cleanup(func() { tracing.Shutdown() }) //nolint:errcheck // nothing is exported
	return tracing
}

// BenchmarkEchoCall is one echo call from a client to a server over bufconn
// (in memory, so the figure includes both gRPC stacks but no kernel):
//
//	server=bare        grpc.NewServer() and bareEcho, no interceptor, no metric
//	server=defaults    bareEcho behind the ecosystem's defaults: go-grpc-middleware's
//	                   Prometheus interceptors with the handling-time histogram,
//	                   otelgrpc's stats handler, the SDK sampling every call
//	server=ours        newGRPCServer as shipped, log level info (call logs off)
//	server=ours-debug  newGRPCServer with SERVER_LOG_LEVEL=debug (a log line a call, sampled)
//
// The key=value names let benchstat compare the servers: -col /server.
func BenchmarkEchoCall(b *testing.B) {
	cfg := testConfig()
	cfg.MaxRecvMsgBytes = 16384
	cfg.MaxNameBytes = 1024
	variants := []struct {
		name  string
		start func(b *testing.B) *grpc.Server
	}{
		{name: "server=bare", start: bareServer},
		{name: "server=defaults", start: defaultsServer},
		{name: "server=ours", start: func(b *testing.B) *grpc.Server {
			return newGRPCServer(cfg, benchLogger(b, zapcore.InfoLevel), prometheus.NewRegistry(), benchTracing(b)).Server
		}},
		{name: "server=ours-debug", start: func(b *testing.B) *grpc.Server {
			return newGRPCServer(cfg, benchLogger(b, zapcore.DebugLevel), prometheus.NewRegistry(), benchTracing(b)).Server
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) { benchCalls(b, v.start(b)) })
	}
}

// defaultsServer is what a user assembles from the ecosystem's defaults
// (as infra/bench/baseline -stack defaults), its spans batched to an
// exporter that drops them.
func defaultsServer(b *testing.B) *grpc.Server {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) }) //nolint:errcheck // nothing is exported
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	prometheus.NewRegistry().MustRegister(m)
	s := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp))),
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
	)
	foopb.RegisterFooServer(s, bareEcho{})
	m.InitializeMetrics(s)
	return s
}

// bareServer is the baseline: grpc.NewServer() and bareEcho, nothing else.
func bareServer(*testing.B) *grpc.Server {
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, bareEcho{})
	return s
}

// BenchmarkEchoCallPart is one call over bufconn with one part of the
// server's instrumentation at a time, each as newGRPCServer builds it, and
// all of them (part=ours): benchstat -col /part shows what each costs
// against part=bare. scripts/bench runs it in its micro section.
func BenchmarkEchoCallPart(b *testing.B) {
	cfg := testConfig()
	cfg.MaxRecvMsgBytes, cfg.MaxNameBytes = 16384, 1024
	withUnary := func(i ...grpc.UnaryServerInterceptor) *grpc.Server {
		s := grpc.NewServer(grpc.ChainUnaryInterceptor(i...))
		foopb.RegisterFooServer(s, bareEcho{})
		return s
	}
	variants := []struct {
		name  string
		start func(b *testing.B) *grpc.Server
	}{
		{name: "part=bare", start: bareServer},
		{name: "part=grpcprom", start: func(*testing.B) *grpc.Server {
			m := newServerMetrics(prometheus.NewRegistry())
			s := withUnary(m.UnaryServerInterceptor(grpcprom.WithExemplarFromContext(platform.NewExemplarSampler(platform.ExemplarInterval).Exemplar)))
			m.InitializeMetrics(s)
			return s
		}},
		{name: "part=calls", start: func(b *testing.B) *grpc.Server {
			var inFlight atomic.Int64
			return withUnary(callInterceptor(benchLogger(b, zapcore.InfoLevel), cfg.SlowCall, &inFlight))
		}},
		{name: "part=tracing", start: func(b *testing.B) *grpc.Server {
			s := grpc.NewServer(grpc.StatsHandler(benchTracing(b).ServerHandler()))
			foopb.RegisterFooServer(s, bareEcho{})
			return s
		}},
		{name: "part=recovery", start: func(*testing.B) *grpc.Server {
			return withUnary(recovery.UnaryServerInterceptor())
		}},
		{name: "part=echo-metrics", start: func(*testing.B) *grpc.Server {
			s := grpc.NewServer()
			foopb.RegisterFooServer(s, &echoServer{maxNameBytes: cfg.MaxNameBytes, metrics: newEchoMetrics(prometheus.NewRegistry())})
			return s
		}},
		{name: "part=ours", start: func(b *testing.B) *grpc.Server {
			return newGRPCServer(cfg, benchLogger(b, zapcore.InfoLevel), prometheus.NewRegistry(), benchTracing(b)).Server
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) { benchCalls(b, v.start(b)) })
	}
}

// benchCalls serves s over bufconn and times echo calls to it.
func benchCalls(b *testing.B, s *grpc.Server) {
	client := foopb.NewFooClient(platformtest.Dial(b, s))
	ctx := b.Context()
	req := &foopb.EchoRequest{Name: "world"}
	b.ReportAllocs()
	for b.Loop() {
		reply, err := client.Echo(ctx, req)
		if err != nil || reply.GetMessage() != "world" {
			b.Fatalf("Echo = %v, %v; want world", reply, err)
		}
	}
}

// BenchmarkEchoHandler is the handler alone, called directly: bareEcho
// against echoServer with its histogram, counter, gauge and exemplar.
func BenchmarkEchoHandler(b *testing.B) {
	variants := []struct {
		name string
		srv  foopb.FooServer
	}{
		{name: "server=bare", srv: bareEcho{}},
		{name: "server=ours", srv: &echoServer{maxNameBytes: 1024, metrics: newEchoMetrics(prometheus.NewRegistry())}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			ctx := b.Context()
			req := &foopb.EchoRequest{Name: "world"}
			b.ReportAllocs()
			for b.Loop() {
				reply, err := v.srv.Echo(ctx, req)
				if err != nil || reply.GetMessage() != "world" {
					b.Fatalf("Echo = %v, %v; want world", reply, err)
				}
			}
		})
	}
}

// BenchmarkGRPCPort is the cost of answerBrowsers on the gRPC port, over
// loopback TCP with a bare server, against the listener alone:
//
//	op=call  one echo call on a connection made once (its reads and writes
//	         pass one atomic load each)
//	op=conn  a new connection and one echo call on it (the server's SETTINGS
//	         held until the client's preface arrives)
//
// -col /listener compares them.
func BenchmarkGRPCPort(b *testing.B) {
	for _, op := range []string{"call", "conn"} {
		for _, wrapped := range []bool{false, true} {
			name := "op=" + op + "/listener=plain"
			if wrapped {
				name = "op=" + op + "/listener=answerBrowsers"
			}
			b.Run(name, func(b *testing.B) {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				addr := lis.Addr().String()
				if wrapped {
					lis = answerBrowsers(lis, zap.NewNop())
				}
				s := grpc.NewServer()
				foopb.RegisterFooServer(s, bareEcho{})
				go s.Serve(lis) //nolint:errcheck // ends with Stop
				defer s.Stop()
				dial := func() *grpc.ClientConn {
					conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
					if err != nil {
						b.Fatal(err)
					}
					return conn
				}
				call := func(conn *grpc.ClientConn) {
					if _, err := foopb.NewFooClient(conn).Echo(b.Context(), &foopb.EchoRequest{Name: "x"}); err != nil {
						b.Fatal(err)
					}
				}
				conn := dial()
				defer conn.Close()
				call(conn)
				b.ReportAllocs()
				cpu := processCPU(b)
				for b.Loop() {
					if op == "call" {
						call(conn)
						continue
					}
					c := dial()
					call(c)
					c.Close()
				}
				b.ReportMetric(float64((processCPU(b)-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// processCPU is the CPU time, user and system, the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
