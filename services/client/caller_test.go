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
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// fakeServer answers echo, failing for names that start with "fail",
// blocking until the call ends for "block" and taking 100ms for "slow". It
// sends on traceparents the traceparent of each call it gets.
type fakeServer struct {
	foopb.UnimplementedFooServer
	traceparents chan string
}

func (f fakeServer) Echo(ctx context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	select {
	case f.traceparents <- strings.Join(metadata.ValueFromIncomingContext(ctx, "traceparent"), ","):
	default:
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

// testCaller is a caller of a fakeServer in process, connected the way run
// connects to the server (through the client's tracing stats handler).
type testCaller struct {
	*caller
	spans        *tracetest.SpanRecorder
	logs         *observer.ObservedLogs
	traceparents chan string // of the first call
}

func newTestCaller(t *testing.T, cfg Config) *testCaller {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	tracing, spans := platformtest.Tracing(t, "client", zap.New(core))
	srv := fakeServer{traceparents: make(chan string, 1)}
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, srv)
	conn := platformtest.Dial(t, s, grpc.WithStatsHandler(tracing.ClientHandler()))
	c := newCaller(foopb.NewFooClient(conn), cfg, zap.New(core), prometheus.NewRegistry(), tracing.Tracer("client"))
	return &testCaller{caller: c, spans: spans, logs: logs, traceparents: srv.traceparents}
}

// wantCalls checks echo_client_calls_total{result}.
func (c *testCaller) wantCalls(t *testing.T, ok, failed float64) {
	t.Helper()
	if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultOK)); got != ok {
		t.Errorf("calls{result=ok} = %v, want %v", got, ok)
	}
	if got := testutil.ToFloat64(c.calls.WithLabelValues(platform.ResultError)); got != failed {
		t.Errorf("calls{result=error} = %v, want %v", got, failed)
	}
}

// TestCall: each call is counted by result and is a trace of its own, whose
// root is the call's span and whose client span sends the server its
// traceparent; a failed call's warning names that trace and span.
func TestCall(t *testing.T) {
	for _, tt := range []struct {
		name    string
		timeout time.Duration
		fails   bool
	}{
		{name: "world", timeout: time.Second},
		{name: "fail", timeout: time.Second, fails: true},            // an error status
		{name: "block", timeout: 20 * time.Millisecond, fails: true}, // the deadline
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCaller(t, Config{Rate: 1, Concurrency: 1, Name: tt.name, Timeout: tt.timeout})
			c.call(t.Context())
			if tt.fails {
				c.wantCalls(t, 0, 1)
			} else {
				c.wantCalls(t, 1, 0)
			}

			var root, client sdktrace.ReadOnlySpan
			for _, s := range c.spans.Ended() {
				switch s.SpanKind() {
				case trace.SpanKindInternal:
					root = s
				case trace.SpanKindClient:
					client = s
				}
			}
			if root == nil || client == nil || len(c.spans.Ended()) != 2 {
				t.Fatalf("spans %v, want the call's and one client span", c.spans.Ended())
			}
			if root.Parent().IsValid() || client.Parent().SpanID() != root.SpanContext().SpanID() || client.SpanContext().TraceID() != root.SpanContext().TraceID() {
				t.Errorf("client span %v (parent %v) is not the child of the call's root span %v", client.SpanContext(), client.Parent(), root.SpanContext())
			}
			// A call past its deadline may end before the server sees it (a
			// loaded machine): then there is no traceparent to check.
			select {
			case got := <-c.traceparents:
				if want := fmt.Sprintf("00-%s-%s-01", client.SpanContext().TraceID(), client.SpanContext().SpanID()); got != want {
					t.Errorf("the server got traceparent %q, want %q", got, want)
				}
			default:
				if tt.name != "block" {
					t.Errorf("the server got no call")
				}
			}
			warnings := c.logs.FilterMessage("echo failed").All()
			if !tt.fails {
				if len(warnings) != 0 || root.Status().Code == otelcodes.Error {
					t.Errorf("a successful call logged %v, span status %v", warnings, root.Status())
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("%d warnings of the failed call, want 1: %v", len(warnings), c.logs.All())
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

func TestRunKeepsRateAndStops(t *testing.T) {
	c := newTestCaller(t, Config{Rate: 200, Concurrency: 4, Name: "world", Timeout: time.Second})
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
	if limit := 1 + c.cfg.Rate*elapsed.Seconds(); got < 1 || got > limit {
		t.Errorf("calls{result=ok} after %v at %v/s = %v, want between 1 and %.1f", elapsed, c.cfg.Rate, got, limit)
	}
	c.wantCalls(t, got, 0)
}

// TestRunFinishesCallsInFlight: a client that stops (or hands over to its
// next binary) lets the call it sent finish rather than abandon it.
func TestRunFinishesCallsInFlight(t *testing.T) {
	c := newTestCaller(t, Config{Rate: 1, Concurrency: 1, Name: "slow", Timeout: time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel) // while the first call is in flight
	if err := c.run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	c.wantCalls(t, 1, 0)
}
