// Package platformtest holds what the programs' tests share: a gRPC
// connection to a server in the test process (bufconn), and the programs'
// tracing with its spans recorded.
package platformtest

import (
	"context"
	"net"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"example.com/grpc-metrics/services/internal/platform"
)

// Dial serves s over bufconn until the test ends and returns a connection
// to it, made with opts besides the in-process dialer.
func Dial(t testing.TB, s *grpc.Server, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Tracing returns program's tracing as it runs with no OTLP endpoint, plus
// a recorder of the spans it ends.
func Tracing(t testing.TB, program string, log *zap.Logger) (*platform.Tracing, *tracetest.SpanRecorder) {
	t.Helper()
	spans := tracetest.NewSpanRecorder()
	tracing, err := platform.NewTracing(context.Background(), program, log, sdktrace.WithSpanProcessor(spans))
	if err != nil {
		t.Fatalf("NewTracing: %v", err)
	}
	t.Cleanup(func() { tracing.Shutdown() }) //nolint:errcheck // nothing is exported
	return tracing, spans
}
