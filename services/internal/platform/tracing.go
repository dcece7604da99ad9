package platform

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/stats"
)

// Keys of a call's W3C trace context wherever it appears: the log fields of
// both programs, and the exemplar label of every latency histogram
// (TraceIDKey alone).
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// Tuning of the export.
const (
	exportWarnEvery = time.Minute     // at most one warning about a failing export a minute
	flushTimeout    = 2 * time.Second // the last spans' export at exit; a restart must not wait for a missing collector
)

// Tracing is a program's OpenTelemetry tracing: the SDK's tracer provider,
// configured by the standard OTEL_* environment variables that the SDK reads
// itself, and W3C trace context and baggage propagation. It exports over
// OTLP/HTTP (protobuf) in batches as OTEL_TRACES_EXPORTER says (see
// exportsOTLP); otherwise nothing leaves the process, and every call still
// gets a trace id for its logs and exemplars.
type Tracing struct {
	provider   *sdktrace.TracerProvider
	propagator propagation.TextMapPropagator
	exporting  bool
}

// NewTracing sets up tracing for program, its default service name. A
// malformed OTEL_* variable is an error here, not a silent default. Tests add
// their span processors or exporters with extra.
func NewTracing(ctx context.Context, program string, log *zap.Logger, extra ...sdktrace.TracerProviderOption) (*Tracing, error) {
	// The SDK reports what it cannot parse through OpenTelemetry's global
	// error handler and logger, and carries on with defaults: collect it.
	setup := &setupErrors{}
	otel.SetErrorHandler(setup)
	otel.SetLogger(logr.New(&otelSink{handle: setup.Handle}))

	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(program)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && setup.err() == nil { // the detectors may have reported it already
		setup.Handle(err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	t := &Tracing{propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	if t.exporting, err = exportsOTLP(); err != nil {
		setup.Handle(err)
	}
	if t.exporting {
		// The endpoint, headers, timeout, TLS and compression come from
		// OTEL_EXPORTER_OTLP_*; the batch's queue bound from OTEL_BSP_*.
		// OTLP over HTTP, not gRPC: the exporter's connection then stays
		// out of grpc-go's log, which is the calls' own.
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	t.provider = sdktrace.NewTracerProvider(append(opts, extra...)...) // the sampler: OTEL_TRACES_SAMPLER, _ARG
	if err := setup.err(); err != nil {
		t.provider.Shutdown(ctx) //nolint:errcheck // nothing was exported yet
		return nil, fmt.Errorf("OpenTelemetry configuration (OTEL_* variables): %w", err)
	}

	// From now on: a failing export is worth a warning, not a flood.
	warn := &exportWarnings{log: log, limit: rate.NewLimiter(rate.Every(exportWarnEvery), 1)}
	otel.SetErrorHandler(warn)
	otel.SetLogger(logr.New(&otelSink{handle: warn.Handle}))
	if t.exporting {
		log.Info("exporting traces over OTLP", zap.String("service", serviceName(res)))
	}
	return t, nil
}

// exportsOTLP reads OTEL_TRACES_EXPORTER, OpenTelemetry's choice of span
// exporter: otlp or none. Unset, it is otlp when an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
// none otherwise, so that a program run by hand sends nothing. The other
// exporters of the specification (console, a list) are refused:
// contrib's autoexport, which has them, adds 1.6 MB to each binary (the
// metric and log exporters come with it), and every live update copies the
// binary.
func exportsOTLP() (bool, error) {
	v := os.Getenv("OTEL_TRACES_EXPORTER")
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "otlp":
		return true, nil
	case "none":
		return false, nil
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	}
	return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: not supported (use otlp or none)", v)
}

// serviceName returns the service.name of res.
func serviceName(res *resource.Resource) string {
	v, _ := res.Set().Value(semconv.ServiceNameKey)
	return v.AsString()
}

// Tracer returns the tracer of the program's own spans.
func (t *Tracing) Tracer(name string) trace.Tracer { return t.provider.Tracer(name) }

// ServerHandler returns the stats handler that gives each incoming call its
// server span, a child of the caller's when it sent a valid traceparent.
func (t *Tracing) ServerHandler() stats.Handler { return otelgrpc.NewServerHandler(t.options()...) }

// ClientHandler returns the stats handler that gives each outgoing call its
// client span and sends its context as traceparent (and baggage).
func (t *Tracing) ClientHandler() stats.Handler { return otelgrpc.NewClientHandler(t.options()...) }

func (t *Tracing) options() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.propagator),
		// Prometheus has the calls' metrics; OpenTelemetry's would be a second copy.
		otelgrpc.WithMeterProvider(noop.NewMeterProvider()),
	}
}

// Shutdown exports the spans still queued, for at most a short while: a
// process restarted by a live update must not wait for a collector that is
// not there.
func (t *Tracing) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil && t.exporting {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// callSpan returns the span context of the call in ctx (the span the stats
// handler started, or the caller's own), and whether there is a valid one:
// where the logs' and exemplars' ids come from.
func callSpan(ctx context.Context) (trace.SpanContext, bool) {
	sc := trace.SpanContextFromContext(ctx)
	return sc, sc.IsValid()
}

// TraceFields returns the zap fields trace_id and span_id of the span in
// ctx, or none when ctx carries no valid span.
func TraceFields(ctx context.Context) []zap.Field {
	sc, ok := callSpan(ctx)
	if !ok {
		return nil
	}
	return []zap.Field{zap.String(TraceIDKey, sc.TraceID().String()), zap.String(SpanIDKey, sc.SpanID().String())}
}

// setupErrors collects what the SDK reports while it reads its settings.
type setupErrors struct {
	mu   sync.Mutex
	errs []error
}

func (s *setupErrors) Handle(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

func (s *setupErrors) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// exportWarnings logs what OpenTelemetry reports once the program runs,
// almost always a failing export (the collector is down or unreachable),
// as one warning a minute at most, with the count of the reports left out.
type exportWarnings struct {
	log        *zap.Logger
	limit      *rate.Limiter
	suppressed atomic.Int64
}

func (w *exportWarnings) Handle(err error) {
	if !w.limit.Allow() {
		w.suppressed.Add(1)
		return
	}
	w.log.Warn("tracing: spans are not exported (the calls are not affected)", zap.String("event", "export_failed"), zap.Error(err),
		zap.Int64("suppressed", w.suppressed.Swap(0)), zap.Duration("at_most_one_warning_per", exportWarnEvery))
}

// otelSink routes OpenTelemetry's own logger (logr) to handle: its errors
// and warnings (verbosity 1); its info and debug lines are dropped.
type otelSink struct {
	handle func(error)
	values []any
}

var _ logr.LogSink = (*otelSink)(nil)

func (*otelSink) Init(logr.RuntimeInfo)          {}
func (*otelSink) Enabled(level int) bool         { return level <= 1 }
func (s *otelSink) WithName(string) logr.LogSink { return s }

func (s *otelSink) WithValues(kv ...any) logr.LogSink {
	return &otelSink{handle: s.handle, values: append(append([]any(nil), s.values...), kv...)}
}

func (s *otelSink) Info(level int, msg string, kv ...any) {
	if level <= 1 {
		s.handle(errors.New(s.describe(msg, kv)))
	}
}

func (s *otelSink) Error(err error, msg string, kv ...any) {
	s.handle(fmt.Errorf("%s: %w", s.describe(msg, kv), err))
}

// describe is msg followed by its key-value pairs, if any.
func (s *otelSink) describe(msg string, kv []any) string {
	kv = append(append([]any(nil), s.values...), kv...)
	for i := 0; i+1 < len(kv); i += 2 {
		msg += fmt.Sprintf(" %v=%q", kv[i], fmt.Sprint(kv[i+1]))
	}
	return msg
}
