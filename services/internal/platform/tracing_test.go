package platform

import (
	"errors"
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

// TestTracingResource: the service name is the program's unless
// OTEL_SERVICE_NAME says otherwise; OTEL_RESOURCE_ATTRIBUTES are added.
func TestTracingResource(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantService string
		wantAttr    string // key=value among the span's resource attributes
	}{
		{name: "default", wantService: "server"},
		{name: "service name", env: map[string]string{"OTEL_SERVICE_NAME": "echo-server"}, wantService: "echo-server"},
		{name: "attributes", env: map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=server-1"}, wantService: "server", wantAttr: "k8s.pod.name=server-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			spans := tracetest.NewSpanRecorder()
			tr, err := NewTracing(t.Context(), "server", zap.NewNop(), sdktrace.WithSpanProcessor(spans))
			if err != nil {
				t.Fatal(err)
			}
			_, span := tr.Tracer("test").Start(t.Context(), "op")
			span.End()
			if err := tr.Shutdown(); err != nil {
				t.Fatal(err)
			}
			attrs := map[string]string{}
			for _, kv := range spans.Ended()[0].Resource().Attributes() {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			if attrs["service.name"] != tt.wantService {
				t.Errorf("service.name = %q, want %q", attrs["service.name"], tt.wantService)
			}
			if k, v, ok := strings.Cut(tt.wantAttr, "="); ok && attrs[k] != v {
				t.Errorf("resource attribute %s = %q, want %q", k, attrs[k], v)
			}
		})
	}
}

// TestExporter: OTEL_TRACES_EXPORTER chooses; unset, the program exports
// only when an OTLP endpoint is set. Without export nothing is logged about
// tracing, and spans still have trace ids for the logs and exemplars.
func TestExporter(t *testing.T) {
	const endpoint = "http://127.0.0.1:4318"
	tests := []struct {
		exporter, endpoint string
		want               bool
	}{
		{exporter: "", endpoint: "", want: false},
		{exporter: "", endpoint: endpoint, want: true},
		{exporter: "none", endpoint: endpoint, want: false},
		{exporter: "otlp", endpoint: "", want: true}, // to the specification's default endpoint
		{exporter: " OTLP ", endpoint: endpoint, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.exporter+" "+tt.endpoint, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_EXPORTER", tt.exporter)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tt.endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
			core, logs := observer.New(zapcore.DebugLevel)
			tr, err := NewTracing(t.Context(), "client", zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			lines := 0 // "exporting traces over OTLP", and nothing else
			if tt.want {
				lines = 1
			}
			if n := logs.FilterMessage("exporting traces over OTLP").Len(); n != lines || logs.Len() != lines {
				t.Errorf("exporting: logged %v, want %d line about it", logs.All(), lines)
			}
			ctx, _ := tr.Tracer("test").Start(t.Context(), "op") // never ended: nothing to export
			tr.Shutdown()                                        //nolint:errcheck // nothing was queued
			fields := TraceFields(ctx)
			if len(fields) != 2 || len(fields[0].String) != 32 || len(fields[1].String) != 16 {
				t.Errorf("TraceFields = %v, want a 32-digit trace_id and a 16-digit span_id", fields)
			}
			if got := TraceExemplar(ctx)[TraceIDKey]; got != fields[0].String {
				t.Errorf("TraceExemplar = %q, want the trace id %q", got, fields[0].String)
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
