package main

import (
	"regexp"
	"slices"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// TestEchoTraces: each call has a server span, the child of the caller's
// span when it sent a valid traceparent, and the latency exemplars of the
// echo histogram and of grpc_server_handling_seconds name its trace.
func TestEchoTraces(t *testing.T) {
	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	tests := []struct {
		name        string
		traceparent string // sent as is; none when empty
		wantTrace   string // the server span's trace id; "" for a new one
		wantParent  string // the server span's parent span id
		wantSpan    bool   // a span recorded (the caller's sampling decision is kept)
	}{
		{name: "no traceparent", wantSpan: true},
		{name: "caller's sampled trace", traceparent: "00-" + callerTrace + "-" + callerSpan + "-01", wantTrace: callerTrace, wantParent: callerSpan, wantSpan: true},
		{name: "caller's unsampled trace", traceparent: "00-" + callerTrace + "-" + callerSpan + "-00"},
		{name: "malformed traceparent", traceparent: "00-" + callerTrace + "-nothex-01", wantSpan: true},
		{name: "all-zero trace id", traceparent: "00-00000000000000000000000000000000-" + callerSpan + "-01", wantSpan: true},
	}
	traceID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, testConfig(), nil)
			ctx := testContext(t)
			if tt.traceparent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tt.traceparent)
			}
			if _, err := srv.foo.Echo(ctx, &foopb.EchoRequest{Name: "n"}); err != nil {
				t.Fatalf("Echo: %v", err)
			}
			// The stats handler ends the span once the reply is sent, maybe
			// after the client has it.
			ended := func() []sdktrace.ReadOnlySpan {
				return slices.DeleteFunc(srv.spans.Ended(), func(s sdktrace.ReadOnlySpan) bool { return s.Name() != "foo.Foo/echo" })
			}
			if tt.wantSpan {
				waitFor(t, "the server span", func() bool { return len(ended()) > 0 })
			}
			spans := ended()
			echoIDs := exemplars(t, srv.reg, "echo_request_duration_seconds", map[string]string{"result": platform.ResultOK})
			grpcIDs := exemplars(t, srv.reg, "grpc_server_handling_seconds", nil)
			if !tt.wantSpan {
				if len(spans) != 0 || len(echoIDs) != 0 || len(grpcIDs) != 0 {
					t.Errorf("unsampled call: spans %v, exemplars %q and %q; want none", spans, echoIDs, grpcIDs)
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("%d server spans foo.Foo/echo, want 1", len(spans))
			}
			span := spans[0]
			got := span.SpanContext().TraceID().String()
			if tt.wantTrace != "" && got != tt.wantTrace || !traceID.MatchString(got) || got == "00000000000000000000000000000000" {
				t.Errorf("server span's trace id = %s, want %q (empty: a new one)", got, tt.wantTrace)
			}
			if parent := span.Parent().SpanID().String(); tt.wantParent != "" && parent != tt.wantParent || tt.wantParent == "" && span.Parent().IsValid() {
				t.Errorf("server span's parent = %s, want %q (empty: none)", parent, tt.wantParent)
			}
			if span.SpanKind() != trace.SpanKindServer {
				t.Errorf("span kind = %v, want server", span.SpanKind())
			}
			want := []string{got}
			if !slices.Equal(echoIDs, want) || !slices.Equal(grpcIDs, want) {
				t.Errorf("%s exemplars: echo_request_duration_seconds %q, grpc_server_handling_seconds %q; want %q in each", platform.TraceIDKey, echoIDs, grpcIDs, want)
			}
		})
	}
}
