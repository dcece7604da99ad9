package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// fakeServer answers echo, failing for names that start with "fail" and
// blocking until the call ends for "block". It keeps the traceparent of
// each call it gets.
type fakeServer struct {
	foopb.UnimplementedFooServer
	traceparents chan string
}

func (f fakeServer) Echo(ctx context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	if f.traceparents != nil {
		f.traceparents <- strings.Join(metadata.ValueFromIncomingContext(ctx, "traceparent"), ",")
	}
	switch {
	case strings.HasPrefix(req.GetName(), "fail"):
		return nil, status.Error(codes.InvalidArgument, "bad name")
	case req.GetName() == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	case req.GetName() == "slow":
		time.Sleep(100 * time.Millisecond)
	}
	return &foopb.EchoReply{Message: req.GetName()}, nil
}

// fakeClient connects to srv in process the way run connects to the
// server: through the client's tracing stats handler.
func fakeClient(t *testing.T, srv fakeServer, tracing *platform.Tracing) foopb.FooClient {
	t.Helper()
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, srv)
	return foopb.NewFooClient(platformtest.Dial(t, s, grpc.WithStatsHandler(tracing.ClientHandler())))
}

func TestCallCountsResults(t *testing.T) {
	tests := []struct {
		name      string
		reqName   string
		timeout   time.Duration
		wantOK    float64
		wantError float64
	}{
		{name: "success", reqName: "world", timeout: time.Second, wantOK: 1},
		{name: "error status", reqName: "fail", timeout: time.Second, wantError: 1},
		{name: "deadline exceeded", reqName: "block", timeout: 20 * time.Millisecond, wantError: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := Config{Rate: 1, Concurrency: 1, Name: tt.reqName, Timeout: tt.timeout}
			tracing, _ := platformtest.Tracing(t, "client", zaptest.NewLogger(t))
			c := newCaller(fakeClient(t, fakeServer{}, tracing), cfg, zaptest.NewLogger(t), reg, tracing.Tracer("client"))
			c.call(t.Context())
			if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultOK)); got != tt.wantOK {
				t.Errorf("calls{result=ok} = %v, want %v", got, tt.wantOK)
			}
			if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultError)); got != tt.wantError {
				t.Errorf("calls{result=error} = %v, want %v", got, tt.wantError)
			}
		})
	}
}

func TestRunKeepsRateAndStops(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Rate: 200, Concurrency: 4, Name: "world", Timeout: time.Second}
	tracing, _ := platformtest.Tracing(t, "client", zaptest.NewLogger(t))
	c := newCaller(fakeClient(t, fakeServer{}, tracing), cfg, zaptest.NewLogger(t), reg, tracing.Tracer("client"))
	ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	elapsed := time.Since(start)
	if elapsed > time.Second {
		t.Errorf("run took %v to stop after its context ended at 250ms", elapsed)
	}
	// The limiter (burst 1) allows one call at once and then one every 5ms:
	// never more, however fast the server; fewer only on a loaded machine.
	got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultOK))
	if limit := 1 + cfg.Rate*elapsed.Seconds(); got < 1 || got > limit {
		t.Errorf("calls{result=ok} after %v at %v/s = %v, want between 1 and %.1f", elapsed, cfg.Rate, got, limit)
	}
	if errs := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultError)); errs != 0 {
		t.Errorf("calls{result=error} = %v, want 0", errs)
	}
}

// TestRunFinishesCallsInFlight: a client that stops (or hands over to its
// next binary) lets the call it sent finish rather than abandon it.
func TestRunFinishesCallsInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Rate: 1, Concurrency: 1, Name: "slow", Timeout: time.Second}
	tracing, _ := platformtest.Tracing(t, "client", zaptest.NewLogger(t))
	c := newCaller(fakeClient(t, fakeServer{}, tracing), cfg, zaptest.NewLogger(t), reg, tracing.Tracer("client"))
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel) // while the first call is in flight
	if err := c.run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultOK)); got != 1 {
		t.Errorf("calls{result=ok} = %v, want 1: the call in flight at the stop finishes", got)
	}
	if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultError)); got != 0 {
		t.Errorf("calls{result=error} = %v, want 0", got)
	}
}

// TestCallTrace: each call is a trace of its own, whose root is the call's
// span and whose client span sends the server its traceparent; a failed
// call's warning names that trace and span.
func TestCallTrace(t *testing.T) {
	for _, name := range []string{"world", "fail"} {
		t.Run(name, func(t *testing.T) {
			tracing, spans := platformtest.Tracing(t, "client", zaptest.NewLogger(t))
			srv := fakeServer{traceparents: make(chan string, 1)}
			core, logs := observer.New(zap.InfoLevel)
			cfg := Config{Rate: 1, Concurrency: 1, Name: name, Timeout: time.Second}
			c := newCaller(fakeClient(t, srv, tracing), cfg, zap.New(core), prometheus.NewRegistry(), tracing.Tracer("client"))
			c.call(t.Context())

			var root, client sdktrace.ReadOnlySpan
			for _, s := range spans.Ended() {
				switch s.SpanKind() {
				case trace.SpanKindInternal:
					root = s
				case trace.SpanKindClient:
					client = s
				}
			}
			if root == nil || client == nil || len(spans.Ended()) != 2 {
				t.Fatalf("spans %v, want the call's and one client span", spans.Ended())
			}
			if root.Parent().IsValid() || client.Parent().SpanID() != root.SpanContext().SpanID() || client.SpanContext().TraceID() != root.SpanContext().TraceID() {
				t.Errorf("client span %v (parent %v) is not the child of the call's root span %v", client.SpanContext(), client.Parent(), root.SpanContext())
			}
			want := fmt.Sprintf("00-%s-%s-01", client.SpanContext().TraceID(), client.SpanContext().SpanID())
			if got := <-srv.traceparents; got != want {
				t.Errorf("the server got traceparent %q, want %q", got, want)
			}
			warnings := logs.FilterMessage("echo failed").All()
			if name == "world" {
				if len(warnings) != 0 {
					t.Errorf("a successful call logged %v", warnings)
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("%d warnings of the failed call, want 1: %v", len(warnings), logs.All())
			}
			fields := warnings[0].ContextMap()
			if fields[platform.TraceIDKey] != root.SpanContext().TraceID().String() || fields[platform.SpanIDKey] != root.SpanContext().SpanID().String() {
				t.Errorf("warning fields %v, want trace_id %s and span_id %s", fields, root.SpanContext().TraceID(), root.SpanContext().SpanID())
			}
			if root.Status().Code != otelcodes.Error {
				t.Errorf("the failed call's span has status %v, want Error", root.Status())
			}
		})
	}
}
