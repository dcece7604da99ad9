// Command baseline serves foo.Foo as the load benchmark's baselines
// (scripts/bench) do, built like the server:
//
//	-stack bare      grpc-go and nothing else: no interceptor, no metric, no
//	                 span, no log line per call
//	-stack defaults  what a user assembles from the ecosystem's defaults:
//	                 go-grpc-middleware's Prometheus interceptors with the
//	                 handling-time histogram, otelgrpc's stats handler, and the
//	                 OpenTelemetry SDK sampling every call and exporting in
//	                 batches over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT
//
// Both also serve grpc.health.v1, SERVING from the start, so the benchmark
// can wait for them as it waits for the server, and announce their
// addresses as the programs do: a zap line at info level with the event
// "listening", in JSON or console lines (-log-format), that infra/proctest
// reads.
//
// With -debug-addr, net/http/pprof on a listener of its own, as the
// programs' PREFIX_DEBUG_PORT: the bench's -profile takes their CPU profiles
// under load.
//
// Usage: baseline [-stack bare|defaults] [-addr 127.0.0.1:20100] [-log-format json|console] [-debug-addr ADDR]   (port 0: any free port, logged)
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/grpc-metrics/proto/foopb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:20100", "TCP address of the gRPC listener")
	stack := flag.String("stack", "bare", "bare, or defaults: the ecosystem's metrics and tracing with their defaults")
	format := flag.String("log-format", "json", "log encoding, as the programs': json or console")
	debugAddr := flag.String("debug-addr", "", "TCP address of a net/http/pprof listener; empty: none")
	flag.Parse()
	if *stack != "bare" && *stack != "defaults" {
		fmt.Fprintf(os.Stderr, "baseline: -stack %q: use bare or defaults\n", *stack)
		os.Exit(2)
	}
	log, err := newLogger(*format)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(2)
	}
	defer log.Sync() //nolint:errcheck // stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log.With(zap.String("program", "baseline"), zap.String("stack", *stack)), *addr, *stack, *debugAddr); err != nil {
		log.Error("baseline failed", zap.Error(err))
		os.Exit(1)
	}
}

// newLogger builds a logger that writes the programs' lines: zap's
// production configuration with ISO 8601 times, and in the console format
// capital levels, as services/internal/platform's NewLogger does. It logs
// the start-up only; no call is logged.
func newLogger(format string) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	switch format {
	case "json":
	case "console":
		zc.Encoding = format
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		zc.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("-log-format %q: use json or console", format)
	}
	return zc.Build()
}

// echo replies with the name it was sent.
type echo struct {
	foopb.UnimplementedFooServer
}

var _ foopb.FooServer = echo{}

func (echo) Echo(_ context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	return &foopb.EchoReply{Message: req.GetName()}, nil
}

// run serves on addr (and pprof on debugAddr, unless empty) until ctx ends,
// then stops at once.
func run(ctx context.Context, log *zap.Logger, addr, stack, debugAddr string) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var opts []grpc.ServerOption
	var register func(*grpc.Server)
	listening := []zap.Field{zap.String("grpc", lis.Addr().String())}
	if stack == "defaults" {
		o, reg, shutdown, metricsAddr, err := defaults(ctx)
		if err != nil {
			return err
		}
		defer shutdown()
		opts, register = o, reg
		listening = append(listening, zap.String("metrics", metricsAddr))
	}
	if debugAddr != "" {
		addr, stop, err := servePprof(ctx, debugAddr)
		if err != nil {
			return err
		}
		defer stop()
		listening = append(listening, zap.String("debug", addr))
	}
	// The line the benchmark reads the addresses from, as the programs log it.
	log.Info("listening", append(listening, zap.String("event", "listening"))...)
	s := grpc.NewServer(opts...)
	foopb.RegisterFooServer(s, echo{})
	healthpb.RegisterHealthServer(s, health.NewServer()) // "" is SERVING
	if register != nil {
		register(s)
	}
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	if err := s.Serve(lis); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// servePprof serves net/http/pprof's profiles on addr until stop.
func servePprof(ctx context.Context, addr string) (listening string, stop func(), err error) {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen for pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis) //nolint:errcheck // ends with Close
	stop = func() {
		srv.Close() //nolint:errcheck // closing listeners only
	}
	return lis.Addr().String(), stop, nil
}

// defaults sets up the ecosystem's instrumentation as its documentation
// shows it: global tracer provider and propagators, the interceptors' and
// stats handler's default options, /metrics on a free loopback port.
func defaults(ctx context.Context) (opts []grpc.ServerOption, register func(*grpc.Server), shutdown func(), metricsAddr string, err error) {
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, nil, "", err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, "", err
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(mlis) //nolint:errcheck // ends with Close

	opts = []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}
	shutdown = func() {
		srv.Close() //nolint:errcheck // closing listeners only
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		tp.Shutdown(sctx) //nolint:errcheck // a benchmark's last batch
	}
	return opts, func(s *grpc.Server) { m.InitializeMetrics(s) }, shutdown, mlis.Addr().String(), nil
}
