package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// testConfig is the default configuration with small limits.
func testConfig() Config {
	return Config{GRPCPort: 1, Reflection: true, MaxNameBytes: 16, MaxRecvMsgBytes: 64, MaxConnAge: time.Minute,
		ShutdownTimeout: time.Second, SlowCall: 100 * time.Millisecond, Common: platform.Common{MetricsPort: 2}}
}

// testServer is a server built from a configuration as run builds it,
// served over bufconn, with its registry, the spans it ended and a client.
type testServer struct {
	*grpcServer
	reg   *prometheus.Registry
	spans *tracetest.SpanRecorder
	conn  *grpc.ClientConn
	foo   foopb.FooClient
}

// startServer serves a server built from cfg that logs to log (nil: the
// test's log) until the test ends.
func startServer(t *testing.T, cfg Config, log *zap.Logger) *testServer {
	t.Helper()
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	s := &testServer{reg: prometheus.NewRegistry()}
	var tracing *platform.Tracing
	tracing, s.spans = platformtest.Tracing(t, "server", log)
	s.grpcServer = newGRPCServer(cfg, log, s.reg, tracing)
	s.conn = platformtest.Dial(t, s.Server)
	s.foo = foopb.NewFooClient(s.conn)
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHealth(t *testing.T) {
	srv := startServer(t, testConfig(), nil)
	hc := healthpb.NewHealthClient(srv.conn)
	const (
		serving    = healthpb.HealthCheckResponse_SERVING
		notServing = healthpb.HealthCheckResponse_NOT_SERVING
	)
	steps := []struct {
		name         string
		act          func()
		wantReady    healthpb.HealthCheckResponse_ServingStatus // "" and foo.Foo: the readiness probe
		wantLiveness healthpb.HealthCheckResponse_ServingStatus // "liveness": the liveness probe
	}{
		{name: "before ready", act: func() {}, wantReady: notServing, wantLiveness: notServing},
		{name: "ready", act: srv.setServing, wantReady: serving, wantLiveness: serving},
		{name: "draining", act: srv.setDraining, wantReady: notServing, wantLiveness: serving},
		{name: "stopped", act: srv.health.Shutdown, wantReady: notServing, wantLiveness: notServing},
		{name: "ready again is ignored after shutdown", act: srv.setServing, wantReady: notServing, wantLiveness: notServing},
	}
	for _, step := range steps {
		step.act()
		for _, service := range []string{"", "foo.Foo", livenessService} {
			want := step.wantReady
			if service == livenessService {
				want = step.wantLiveness
			}
			resp, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{Service: service})
			if err != nil || resp.GetStatus() != want {
				t.Errorf("%s: Check(%q) = %v, %v; want %v", step.name, service, resp.GetStatus(), err, want)
			}
		}
	}
	if _, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{Service: "no.Such"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(no.Such): %v, want NotFound", err)
	}
}

func TestReflection(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint(on), func(t *testing.T) {
			cfg := testConfig()
			cfg.Reflection = on
			services, err := listServices(testContext(t), startServer(t, cfg, nil).conn)
			if !on {
				if status.Code(err) != codes.Unimplemented {
					t.Errorf("list services with reflection off: %v, want Unimplemented", err)
				}
				return
			}
			want := []string{"foo.Foo", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
			if diff := cmp.Diff(want, services); err != nil || diff != "" {
				t.Errorf("list services: %v; services (-want +got):\n%s", err, diff)
			}
		})
	}
}

// listServices asks the reflection service for the list of services.
func listServices(ctx context.Context, conn *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// An EOF from Send means the server ended the stream (Unimplemented when
	// reflection is off): its status comes from Recv.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, stream.CloseSend()
}
