package main

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

func TestCallInterceptor(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		took      time.Duration
		wantLevel zapcore.Level
		wantEvent string // "" when nothing is logged
	}{
		{name: "fast success", took: 0},
		{name: "slow success", took: 30 * time.Millisecond, wantLevel: zapcore.WarnLevel, wantEvent: "slow_call"},
		{name: "server fault", err: status.Error(codes.Internal, "boom"), wantLevel: zapcore.ErrorLevel, wantEvent: "call_failed"},
		{name: "deadline", err: status.Error(codes.DeadlineExceeded, "late"), wantLevel: zapcore.ErrorLevel, wantEvent: "call_failed"},
		{name: "caller's mistake", err: status.Error(codes.InvalidArgument, "too long"), wantLevel: zapcore.InfoLevel, wantEvent: "call_refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			var inFlight atomic.Int64
			icpt := callInterceptor(zap.New(core), 20*time.Millisecond, &inFlight)
			sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0: 0xab, 15: 7}, SpanID: trace.SpanID{7: 9}})
			ctx := trace.ContextWithSpanContext(t.Context(), sc)
			ctx = peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 4242}})
			info := &grpc.UnaryServerInfo{FullMethod: "/foo.Foo/echo"}
			handler := func(ctx context.Context, _ any) (any, error) {
				if n := inFlight.Load(); n != 1 {
					t.Errorf("calls in flight during the call = %d, want 1", n)
				}
				time.Sleep(tt.took)
				return nil, tt.err
			}
			_, err := icpt(ctx, nil, info, handler)
			if status.Code(err) != status.Code(tt.err) {
				t.Fatalf("interceptors changed the result: %v", err)
			}
			if n := inFlight.Load(); n != 0 {
				t.Errorf("calls in flight after the call = %d, want 0", n)
			}
			entries := logs.All()
			if tt.wantEvent == "" {
				if len(entries) != 0 {
					t.Fatalf("logged %v, want nothing", entries)
				}
				return
			}
			if len(entries) != 1 {
				t.Fatalf("logged %d lines, want 1", len(entries))
			}
			e := entries[0]
			fields := e.ContextMap()
			if e.Level != tt.wantLevel || fields["event"] != tt.wantEvent {
				t.Errorf("logged %v event %v, want %v %q", e.Level, fields["event"], tt.wantLevel, tt.wantEvent)
			}
			if _, err := time.ParseDuration(fmt.Sprint(fields["duration"])); err != nil {
				t.Errorf("duration field %v: %v", fields["duration"], err)
			}
			delete(fields, "duration")
			want := map[string]any{platform.TraceIDKey: "ab000000000000000000000000000007", platform.SpanIDKey: "0000000000000009", "method": "/foo.Foo/echo", "peer": "10.0.0.9:4242", "code": status.Code(tt.err).String(), "event": tt.wantEvent}
			if tt.err != nil {
				want["error"] = status.Convert(tt.err).Message()
			}
			if diff := cmp.Diff(want, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCallLogs: at debug level every call is logged, with its method, code
// and duration; at info none is (nor is the logging interceptor installed).
func TestCallLogs(t *testing.T) {
	for _, level := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel} {
		t.Run(level.String(), func(t *testing.T) {
			core, logs := observer.New(level)
			if _, err := startServer(t, testConfig(), zap.New(core)).foo.Echo(testContext(t), &foopb.EchoRequest{Name: "n"}); err != nil {
				t.Fatal(err)
			}
			calls := logs.FilterField(zap.String("grpc.method", "echo")).All()
			if level != zapcore.DebugLevel {
				if len(calls) != 0 {
					t.Errorf("call log lines at %v: %v, want none", level, calls)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("%d call log lines at debug, want 1: %v", len(calls), logs.All())
			}
			fields := calls[0].ContextMap()
			if calls[0].Level != zapcore.DebugLevel || fields["grpc.service"] != "foo.Foo" || fields["grpc.code"] != "OK" {
				t.Errorf("call log = %v %v, want debug with grpc.service foo.Foo and grpc.code OK", calls[0].Level, fields)
			}
			if _, err := time.ParseDuration(fmt.Sprint(fields["grpc.duration"])); err != nil {
				t.Errorf("call log grpc.duration = %v, want a duration: %v", fields["grpc.duration"], err)
			}
		})
	}
}
