package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// blockingService is a one-method gRPC service whose calls last until they
// are cancelled: the call in flight that a shutdown must first wait for, then
// cut.
func blockingService(entered chan<- struct{}) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "test.Blocking",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Block",
			// Through the interceptors, as generated handlers go.
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				req := new(emptypb.Empty)
				if err := dec(req); err != nil {
					return nil, err
				}
				block := func(ctx context.Context, _ any) (any, error) {
					entered <- struct{}{}
					<-ctx.Done()
					return nil, status.FromContextError(ctx.Err()).Err()
				}
				return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.Blocking/Block"}, block)
			},
		}},
	}
}

// TestShutdownSequence drives serve through a whole shutdown with a call that
// never finishes by itself: NOT_SERVING while still answering during the
// delay, then the drain, which waits for the call, then the forced stop at
// the timeout. Every goroutine it started is gone afterwards.
func TestShutdownSequence(t *testing.T) {
	noLeaks(t)

	const delay, timeout = 300 * time.Millisecond, 300 * time.Millisecond
	cfg := testConfig()
	cfg.ShutdownDelay, cfg.ShutdownTimeout = delay, timeout
	core, logs := observer.New(zap.InfoLevel)
	entered := make(chan struct{}, 1)
	s := startServe(t, cfg, zap.New(core), func(srv *grpcServer) { srv.RegisterService(blockingService(entered), struct{}{}) })
	readyz := "http://" + s.metrics + "/readyz"

	conn := dial(t, s.grpc)
	health := healthpb.NewHealthClient(conn)
	echo := foopb.NewFooClient(conn)
	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	if got := healthStatus(callCtx, health); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before shutdown = %v, want SERVING", got)
	}
	if got := httpStatus(readyz); got != http.StatusOK {
		t.Fatalf("/readyz before shutdown = %d, want 200", got)
	}

	blocked := make(chan error, 1)
	go func() {
		blocked <- conn.Invoke(callCtx, "/test.Blocking/Block", &emptypb.Empty{}, &emptypb.Empty{})
	}()
	<-entered

	began := time.Now()
	s.stop()
	// The delay: NOT_SERVING, yet every call is still answered.
	waitFor(t, "health NOT_SERVING", func() bool {
		return healthStatus(callCtx, health) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if got := httpStatus(readyz); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the delay = %d, want 503", got)
	}
	if _, err := echo.Echo(callCtx, &foopb.EchoRequest{Name: "late"}); err != nil {
		t.Errorf("echo during the shutdown delay: %v, want an answer", err)
	}
	if time.Since(began) >= delay {
		t.Fatalf("the checks of the delay took %v, longer than the delay itself", time.Since(began))
	}

	// The drain waits for the blocking call until the timeout, then cuts it.
	var callErr error
	select {
	case callErr = <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking call was never cut")
	}
	cut := time.Since(began)
	if code := status.Code(callErr); code != codes.Unavailable && code != codes.Canceled {
		t.Errorf("the blocking call ended with %v (%v), want Unavailable or Canceled", code, callErr)
	}
	if cut < delay+timeout {
		t.Errorf("the blocking call was cut %v after the signal, before delay + timeout (%v)", cut, delay+timeout)
	}
	if total := s.wait(t); total > delay+timeout+2*time.Second {
		t.Errorf("shutdown took %v, want about delay + timeout (%v)", total, delay+timeout)
	}

	var msgs []string
	for _, e := range logs.All() {
		msgs = append(msgs, e.Message)
	}
	want := []string{"serving", "not serving; waiting before draining", "draining calls in progress", "calls still running after the shutdown timeout; cancelling them"}
	if !isSubsequence(want, msgs) {
		t.Errorf("log messages %q, want %q in that order", msgs, want)
	}
}

// served is serve running on loopback listeners.
type served struct {
	grpc, metrics string // addresses
	stop          func() // as a signal does
	began         time.Time
	done          chan error
}

// startServe runs serve with cfg on loopback listeners, the server built as
// run builds it, then changed by each of with.
func startServe(t *testing.T, cfg Config, log *zap.Logger, with ...func(*grpcServer)) *served {
	t.Helper()
	reg := prometheus.NewRegistry()
	tracing, _ := platformtest.Tracing(t, "server", log)
	srv := newGRPCServer(cfg, log, reg, tracing)
	for _, f := range with {
		f(srv)
	}
	lis := listeners{grpc: loopbackListener(t), metrics: loopbackListener(t)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &served{grpc: lis.grpc.Addr().String(), metrics: lis.metrics.Addr().String(), done: make(chan error, 1)}
	s.stop = func() {
		s.began = time.Now()
		cancel()
	}
	go func() { s.done <- serve(ctx, cfg, log, srv, platform.NewMetricsServer(log, reg), lis) }()
	return s
}

// wait waits for serve to return, without error, and returns how long after
// stop it did.
func (s *served) wait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("serve did not return")
	}
	return time.Since(s.began)
}

// noLeaks checks, after every other cleanup of the test, that no goroutine
// started since is left.
func noLeaks(t *testing.T) {
	t.Helper()
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) })
}

// dial connects to addr; the connection closes when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func healthStatus(ctx context.Context, c healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond every 5ms for up to a second.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 1s", what)
		}
	}
}

// isSubsequence reports whether want appears in got in order, not
// necessarily next to each other.
func isSubsequence(want, got []string) bool {
	for _, g := range got {
		if len(want) > 0 && g == want[0] {
			want = want[1:]
		}
	}
	return len(want) == 0
}

// loopbackListener listens on a free loopback port; serve closes it.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// TestShutdownCutsSilentConnections is a restart in place right after a call
// through a port-forward: the pod's end of that connection stays open for a
// while after the caller is gone, and never answers the GOAWAY ping that
// GracefulStop waits for (up to 5s in grpc-go). A reflection stream left
// open (grpcurl's) is cut too. With no call in flight, serve returns at once.
func TestShutdownCutsSilentConnections(t *testing.T) {
	noLeaks(t)

	cfg := testConfig()
	cfg.ShutdownDelay, cfg.ShutdownTimeout = 0, 10*time.Second
	s := startServe(t, cfg, zaptest.NewLogger(t))

	// The silent peer: an HTTP/2 client preface and settings, then nothing.
	silent, err := net.Dial("tcp", s.grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := silent.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(silent, silent)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The server's settings: it has taken the connection as a transport.
	if f, err := fr.ReadFrame(); err != nil {
		t.Fatal(err)
	} else if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("first frame from the server: %v, want SETTINGS", f)
	}

	conn := dial(t, s.grpc)
	callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer callCancel()
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := refl.Recv(); err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if _, err := foopb.NewFooClient(conn).Echo(callCtx, &foopb.EchoRequest{Name: "x"}); err != nil {
		t.Fatalf("echo: %v", err)
	}

	s.stop()
	if took := s.wait(t); took > 500*time.Millisecond {
		t.Errorf("shutdown with a silent connection and an open stream took %v, want well under a second", took)
	}
	if _, err := refl.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the open reflection stream after shutdown: %v, want Unavailable", err)
	}
}
