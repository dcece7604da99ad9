package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"example.com/grpc-metrics/proto/foopb"
)

// fakeServer answers echo, failing for names that start with "fail" and
// blocking until the call ends for "block".
type fakeServer struct {
	foopb.UnimplementedFooServer
}

func (fakeServer) Echo(ctx context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	switch {
	case strings.HasPrefix(req.GetName(), "fail"):
		return nil, status.Error(codes.InvalidArgument, "bad name")
	case req.GetName() == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &foopb.EchoReply{Message: req.GetName()}, nil
}

func fakeClient(t *testing.T) foopb.FooClient {
	t.Helper()
	lis := bufconn.Listen(1 << 16)
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, fakeServer{})
	go s.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return foopb.NewFooClient(conn)
}

func TestCallCountsResults(t *testing.T) {
	tests := []struct {
		name      string
		reqName   string
		timeout   time.Duration
		cancelled bool
		wantOK    float64
		wantError float64
	}{
		{name: "success", reqName: "world", timeout: time.Second, wantOK: 1},
		{name: "error status", reqName: "fail", timeout: time.Second, wantError: 1},
		{name: "deadline exceeded", reqName: "block", timeout: 20 * time.Millisecond, wantError: 1},
		{name: "cancelled at shutdown is not a failure", reqName: "block", timeout: time.Second, cancelled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := Config{Rate: 1, Concurrency: 1, Name: tt.reqName, Timeout: tt.timeout}
			c := newCaller(fakeClient(t), cfg, zaptest.NewLogger(t), reg)
			ctx, cancel := context.WithCancel(t.Context())
			if tt.cancelled {
				time.AfterFunc(20*time.Millisecond, cancel)
			}
			c.call(ctx)
			cancel()
			if got := testutil.ToFloat64(c.calls.WithLabelValues(resultOK)); got != tt.wantOK {
				t.Errorf("calls{result=ok} = %v, want %v", got, tt.wantOK)
			}
			if got := testutil.ToFloat64(c.calls.WithLabelValues(resultError)); got != tt.wantError {
				t.Errorf("calls{result=error} = %v, want %v", got, tt.wantError)
			}
		})
	}
}

func TestRunKeepsRateAndStops(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Rate: 200, Concurrency: 4, Name: "world", Timeout: time.Second}
	c := newCaller(fakeClient(t), cfg, zaptest.NewLogger(t), reg)
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
	got := testutil.ToFloat64(c.calls.WithLabelValues(resultOK))
	if limit := 1 + cfg.Rate*elapsed.Seconds(); got < 1 || got > limit {
		t.Errorf("calls{result=ok} after %v at %v/s = %v, want between 1 and %.1f", elapsed, cfg.Rate, got, limit)
	}
	if errs := testutil.ToFloat64(c.calls.WithLabelValues(resultError)); errs != 0 {
		t.Errorf("calls{result=error} = %v, want 0", errs)
	}
}
