package platform

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/time/rate"
)

// TestNewTracingBadEnv: an OTEL_* variable the SDK cannot use is an error
// at start-up that says what is wrong, not a default taken silently.
func TestNewTracingBadEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "unknown sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: "unsupported sampler: sometimes"},
		{name: "ratio above 1", env: map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: "greater than 1.0"},
		{name: "ratio not a number", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, wantErr: "parsing sampler argument"},
		{name: "resource attribute without value", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name"}, wantErr: "missing value"},
		{name: "endpoint without scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "::4318"}, wantErr: "parse url"},
		{name: "gRPC protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "grpc is not a valid protocol for OTLP/HTTP"},
		{name: "timeout not a number", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, wantErr: "parse duration"},
		{name: "console exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, wantErr: `OTEL_TRACES_EXPORTER="console": not supported (use otlp or none)`},
		{name: "list of exporters", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, wantErr: `OTEL_TRACES_EXPORTER="otlp,console": not supported (use otlp or none)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tr, err := NewTracing(t.Context(), "server", zap.NewNop())
			if err == nil {
				tr.Shutdown() //nolint:errcheck // the test failed already
				t.Fatalf("NewTracing with %v succeeded, want an error about %q", tt.env, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "OpenTelemetry configuration (OTEL_* variables): ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewTracing error %q, want one about the OTEL_* variables saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestTracing: OTEL_TRACES_EXPORTER chooses the exporter; unset, the
// program exports only when an OTLP endpoint is set, and without export
// nothing is logged about tracing. The service name is the program's unless
// OTEL_SERVICE_NAME says otherwise; OTEL_RESOURCE_ATTRIBUTES are added.
// Spans have trace ids for the logs and exemplars either way.
func TestTracing(t *testing.T) {
	const endpoint = "http://127.0.0.1:4318"
	tests := []struct {
		env         map[string]string
		wantExport  bool
		wantService string // "" for the program's
		wantAttr    string // key=value among the resource attributes
	}{
		{},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantExport: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}, wantExport: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, wantExport: true}, // to the specification's default endpoint
		{env: map[string]string{"OTEL_TRACES_EXPORTER": " OTLP ", "OTEL_SERVICE_NAME": "echo-server", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, wantExport: true, wantService: "echo-server"},
		{env: map[string]string{"OTEL_SERVICE_NAME": "echo-server"}, wantService: "echo-server"},
		{env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=server-1"}, wantAttr: "k8s.pod.name=server-1"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} {
				t.Setenv(k, tt.env[k])
			}
			core, logs := observer.New(zapcore.DebugLevel)
			spans := tracetest.NewSpanRecorder()
			tr, err := NewTracing(t.Context(), "server", zap.New(core), sdktrace.WithSpanProcessor(spans))
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := tr.Tracer("test").Start(t.Context(), "op")
			fields := TraceFields(ctx)
			if len(fields) != 2 || len(fields[0].String) != 32 || len(fields[1].String) != 16 || TraceExemplar(ctx)[TraceIDKey] != fields[0].String {
				t.Errorf("TraceFields = %v, TraceExemplar = %v; want a 32-digit trace_id, a 16-digit span_id and the same trace id", fields, TraceExemplar(ctx))
			}
			attrs := map[string]string{}
			if exported := logs.FilterMessage("exporting traces over OTLP").All(); tt.wantExport {
				// The span is not ended: nothing is sent to the endpoint.
				if len(exported) != 1 || logs.Len() != 1 {
					t.Fatalf("logged %v, want one line about the export", logs.All())
				}
				attrs["service.name"] = fmt.Sprint(exported[0].ContextMap()["service"])
			} else {
				span.End()
				if logs.Len() != 0 {
					t.Errorf("logged %v, want nothing", logs.All())
				}
				for _, kv := range spans.Ended()[0].Resource().Attributes() {
					attrs[string(kv.Key)] = kv.Value.Emit()
				}
			}
			tr.Shutdown() //nolint:errcheck // nothing was queued for export
			if want := cmp.Or(tt.wantService, "server"); attrs["service.name"] != want {
				t.Errorf("service.name = %q, want %q", attrs["service.name"], want)
			}
			if k, v, ok := strings.Cut(tt.wantAttr, "="); ok && attrs[k] != v {
				t.Errorf("resource attribute %s = %q, want %q", k, attrs[k], v)
			}
		})
	}
	if got := TraceFields(t.Context()); got != nil {
		t.Errorf("TraceFields without a span = %v, want none", got)
	}
}

// TestExportWarnings: what OpenTelemetry reports once the program runs is
// one warning a minute at most, the next one counting those left out.
func TestExportWarnings(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	tr, err := NewTracing(t.Context(), "server", zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown() //nolint:errcheck // nothing is exported
	w, ok := otel.GetErrorHandler().(*exportWarnings)
	if !ok {
		t.Fatalf("OpenTelemetry's error handler is %T, want the program's", otel.GetErrorHandler())
	}
	for range 100 {
		otel.Handle(errors.New("export failed"))
	}
	if got := logs.FilterMessage("tracing: spans are not exported (the calls are not affected)").All(); len(got) != 1 || got[0].Level != zapcore.WarnLevel {
		t.Fatalf("100 reports logged %v, want one warning", got)
	}
	w.limit = rate.NewLimiter(rate.Every(time.Minute), 1) // a minute later
	otel.Handle(errors.New("export failed again"))
	last := logs.All()[logs.Len()-1].ContextMap()
	if last["suppressed"] != int64(99) || last["error"] != "export failed again" {
		t.Errorf("the next warning's fields %v, want suppressed 99 and the new error", last)
	}
}
