package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// testConfig is the default configuration with small limits.
func testConfig() Config {
	return Config{GRPCPort: 1, MetricsPort: 2, Reflection: true, MaxNameBytes: 16, MaxRecvMsgBytes: 64, MaxConnAge: time.Minute,
		ShutdownTimeout: time.Second, SlowCall: 100 * time.Millisecond}
}

// startServer serves a server built from cfg over bufconn and returns it, its
// registry and a connection to it.
func startServer(t *testing.T, cfg Config) (*grpcServer, *prometheus.Registry, *grpc.ClientConn) {
	t.Helper()
	return startServerLogging(t, cfg, zaptest.NewLogger(t))
}

// startServerLogging is startServer with the server's logger.
func startServerLogging(t *testing.T, cfg Config, log *zap.Logger) (*grpcServer, *prometheus.Registry, *grpc.ClientConn) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := newGRPCServer(cfg, log, reg)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, reg, conn
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEcho(t *testing.T) {
	_, _, conn := startServer(t, testConfig())
	client := foopb.NewFooClient(conn)
	tests := []struct {
		name string
		req  string
		want string
	}{
		{name: "ascii", req: "world", want: "world"},
		{name: "empty", req: "", want: ""},
		{name: "multibyte at the limit", req: strings.Repeat("é", 8), want: strings.Repeat("é", 8)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := client.Echo(testContext(t), &foopb.EchoRequest{Name: tt.req})
			if err != nil {
				t.Fatalf("Echo(%q): %v", tt.req, err)
			}
			if got := reply.GetMessage(); got != tt.want {
				t.Errorf("Echo(%q).Message = %q, want %q", tt.req, got, tt.want)
			}
		})
	}
}

func TestEchoBadInput(t *testing.T) {
	_, reg, conn := startServer(t, testConfig())
	client := foopb.NewFooClient(conn)
	tests := []struct {
		name        string
		req         string
		wantCode    codes.Code
		wantMessage string
	}{
		{name: "name over the limit", req: strings.Repeat("x", 17), wantCode: codes.InvalidArgument,
			wantMessage: "name is 17 bytes, longer than the limit of 16 bytes"},
		{name: "multibyte name over the limit", req: strings.Repeat("é", 9), wantCode: codes.InvalidArgument,
			wantMessage: "name is 18 bytes, longer than the limit of 16 bytes"},
		{name: "message over the receive limit", req: strings.Repeat("x", 100), wantCode: codes.ResourceExhausted,
			wantMessage: "grpc: received message larger than max (102 vs. 64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Echo(testContext(t), &foopb.EchoRequest{Name: tt.req})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Echo: code %v (%v), want %v", got, err, tt.wantCode)
			}
			if got := status.Convert(err).Message(); got != tt.wantMessage {
				t.Errorf("Echo: message %q, want %q", got, tt.wantMessage)
			}
		})
	}
	// Only the long names reached the handler; the oversized message did not.
	if got := echoRequests(t, reg, resultError); got != 2 {
		t.Errorf("echo_requests_total{result=error} = %v, want 2", got)
	}
}

// TestEchoLimitBoundaries runs the tightest message limit the configuration
// allows: a name at the limit is answered, one byte more is refused by the
// name check or, when the longer request no longer fits, by the message limit.
func TestEchoLimitBoundaries(t *testing.T) {
	tests := []struct {
		name     string
		maxName  int
		nameLen  int
		wantCode codes.Code
	}{
		// 1 byte of tag, 1 byte of length below 128.
		{name: "short limit, name at it", maxName: 16, nameLen: 16, wantCode: codes.OK},
		{name: "short limit, one byte more", maxName: 16, nameLen: 17, wantCode: codes.ResourceExhausted},
		// 2 bytes of length from 128 on.
		{name: "at the length-prefix step", maxName: 128, nameLen: 128, wantCode: codes.OK},
		{name: "default limit, name at it", maxName: 1024, nameLen: 1024, wantCode: codes.OK},
		{name: "default limit, one byte more", maxName: 1024, nameLen: 1025, wantCode: codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxNameBytes = tt.maxName
			cfg.MaxRecvMsgBytes = requestBytes(tt.maxName)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			cfg.MaxRecvMsgBytes--
			if err := cfg.Validate(); err == nil {
				t.Fatalf("Validate accepted SERVER_MAX_RECV_MSG_BYTES=%d, one byte below the request at the name limit", cfg.MaxRecvMsgBytes)
			}
			cfg.MaxRecvMsgBytes++
			_, _, conn := startServer(t, cfg)
			name := strings.Repeat("x", tt.nameLen)
			reply, err := foopb.NewFooClient(conn).Echo(testContext(t), &foopb.EchoRequest{Name: name})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Echo(%d bytes) with limits %d/%d: code %v (%v), want %v", tt.nameLen, cfg.MaxNameBytes, cfg.MaxRecvMsgBytes, got, err, tt.wantCode)
			}
			if err == nil && reply.GetMessage() != name {
				t.Errorf("Echo(%d bytes) replied %d bytes", tt.nameLen, len(reply.GetMessage()))
			}
		})
	}
	// With room to spare in the message limit, the name check answers.
	cfg := testConfig()
	_, _, conn := startServer(t, cfg)
	_, err := foopb.NewFooClient(conn).Echo(testContext(t), &foopb.EchoRequest{Name: strings.Repeat("x", cfg.MaxNameBytes+1)})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Errorf("Echo(limit+1) with a roomy message limit: code %v, want InvalidArgument", got)
	}
}

// rawCodec sends bytes as they are, to put malformed messages on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestEchoMalformedRequests(t *testing.T) {
	_, reg, conn := startServer(t, testConfig())
	// Warm the connection up so its goroutines are in the baseline.
	if _, err := foopb.NewFooClient(conn).Echo(testContext(t), &foopb.EchoRequest{Name: "warm"}); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	tests := []struct {
		name string
		wire []byte
	}{
		// Field 1 (name), length 2, bytes that are not UTF-8.
		{name: "invalid UTF-8 name", wire: []byte{0x0a, 0x02, 0xff, 0xfe}},
		{name: "length past the end", wire: []byte{0x0a, 0x09, 'a'}},
		{name: "truncated tag", wire: []byte{0x80}},
		{name: "group start without end", wire: []byte{0x0b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 { // repeated, so a leak per call would show
				var reply []byte
				err := conn.Invoke(testContext(t), foopb.Foo_Echo_FullMethodName, &tt.wire, &reply, grpc.ForceCodec(rawCodec{}))
				if got := status.Code(err); got != codes.Internal {
					t.Fatalf("Invoke: code %v (%v), want %v", got, err, codes.Internal)
				}
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > baseline {
		t.Errorf("%d goroutines after 200 malformed calls, baseline %d: something leaked", got, baseline)
	}
	if got := testutil.CollectAndCount(reg, "echo_requests_total"); got != 2 {
		t.Errorf("echo_requests_total has %d series, want 2", got)
	}
	// Only the warm-up call reached the handler.
	for result, want := range map[string]float64{resultOK: 1, resultError: 0} {
		if got := echoRequests(t, reg, result); got != want {
			t.Errorf("echo_requests_total{result=%s} = %v after malformed requests, want %v: they must not reach the handler", result, got, want)
		}
	}
	// The server still answers.
	reply, err := foopb.NewFooClient(conn).Echo(testContext(t), &foopb.EchoRequest{Name: "still here"})
	if err != nil || reply.GetMessage() != "still here" {
		t.Fatalf("Echo after malformed requests = %q, %v; want %q", reply.GetMessage(), err, "still here")
	}
}

// echoRequests returns the value of echo_requests_total{api="echo",result=result}.
func echoRequests(t *testing.T, reg prometheus.Gatherer, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "echo_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["api"] == apiEcho && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no echo_requests_total{api=%q,result=%q}", apiEcho, result)
	return 0
}

func TestEchoMetrics(t *testing.T) {
	_, reg, conn := startServer(t, testConfig())
	client := foopb.NewFooClient(conn)
	const okCalls, badCalls = 5, 3
	for range okCalls {
		if _, err := client.Echo(testContext(t), &foopb.EchoRequest{Name: "n"}); err != nil {
			t.Fatalf("Echo: %v", err)
		}
	}
	for range badCalls {
		if _, err := client.Echo(testContext(t), &foopb.EchoRequest{Name: strings.Repeat("x", 17)}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Echo(long name): %v, want InvalidArgument", err)
		}
	}

	want := `
# HELP echo_requests_in_flight Echo calls being handled right now.
# TYPE echo_requests_in_flight gauge
echo_requests_in_flight 0
# HELP echo_requests_total Echo calls handled, by result.
# TYPE echo_requests_total counter
echo_requests_total{api="echo",result="error"} 3
echo_requests_total{api="echo",result="ok"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "echo_requests_total", "echo_requests_in_flight"); err != nil {
		t.Error(err)
	}
	counts := histogramCounts(t, reg, "echo_request_duration_seconds")
	if diff := cmp.Diff(map[string]uint64{resultOK: okCalls, resultError: badCalls}, counts); diff != "" {
		t.Errorf("echo_request_duration_seconds sample counts by result (-want +got):\n%s", diff)
	}
	grpcWant := `
# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="echo",grpc_service="foo.Foo",grpc_type="unary"} 3
grpc_server_handled_total{grpc_code="OK",grpc_method="echo",grpc_service="foo.Foo",grpc_type="unary"} 5
`
	if err := testutil.GatherAndCompare(onlyNonZero(t, reg, "grpc_server_handled_total"), strings.NewReader(grpcWant), "grpc_server_handled_total"); err != nil {
		t.Error(err)
	}
	// Pre-initialised: every code of echo exists before it happens.
	if got := testutil.CollectAndCount(reg, "grpc_server_handling_seconds"); got < 1 {
		t.Errorf("grpc_server_handling_seconds has %d series, want the handling-time histogram on", got)
	}
}

func TestEchoExemplars(t *testing.T) {
	randomID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	tests := []struct {
		name   string
		header string // x-request-id sent, none when empty
		want   *regexp.Regexp
	}{
		{name: "no header", want: randomID},
		{name: "caller's id", header: "req-42", want: regexp.MustCompile(`^req-42$`)},
		{name: "id with a space", header: "req 42", want: randomID},
		{name: "id too long", header: strings.Repeat("a", 65), want: randomID},
		{name: "longest id", header: strings.Repeat("a", 64), want: regexp.MustCompile(`^a{64}$`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reg, conn := startServer(t, testConfig())
			ctx := testContext(t)
			if tt.header != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, platform.RequestIDHeader, tt.header)
			}
			if _, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: "n"}); err != nil {
				t.Fatalf("Echo: %v", err)
			}
			ids := exemplarLabels(t, reg, resultOK, platform.RequestIDKey)
			if len(ids) != 1 {
				t.Fatalf("%s exemplars of echo_request_duration_seconds{result=ok} = %q, want one", platform.RequestIDKey, ids)
			}
			if !tt.want.MatchString(ids[0]) {
				t.Errorf("%s = %q, want a match of %s", platform.RequestIDKey, ids[0], tt.want)
			}
		})
	}
}

// exemplarLabels returns the values of exemplar label name on the buckets of
// echo_request_duration_seconds{result=result}.
func exemplarLabels(t *testing.T, reg prometheus.Gatherer, result, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "echo_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "result" && l.GetValue() == result }) {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == name {
						got = append(got, l.GetValue())
					}
				}
			}
		}
	}
	return got
}

func TestEchoInFlight(t *testing.T) {
	m := newEchoMetrics(prometheus.NewRegistry())
	s := &echoServer{maxNameBytes: 8, metrics: m}
	// The gauge counts the call while the handler runs and releases it after.
	m.inFlight.Add(2) // two other calls in progress
	if _, err := s.Echo(t.Context(), &foopb.EchoRequest{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.inFlight); got != 2 {
		t.Errorf("echo_requests_in_flight after a call = %v, want 2", got)
	}
}

// histogramCounts returns the sample count of histogram name by result label.
func histogramCounts(t *testing.T, reg *prometheus.Registry, name string) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					got[l.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return got
}

// onlyNonZero gathers name from reg, leaving out the pre-initialised zeros.
func onlyNonZero(t *testing.T, reg *prometheus.Registry, name string) prometheus.Gatherer {
	t.Helper()
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return nil, err
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			var kept []*dto.Metric
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 0 {
					kept = append(kept, m)
				}
			}
			mf.Metric = kept
			return []*dto.MetricFamily{mf}, nil
		}
		return nil, errors.New("no " + name)
	})
}

func TestHealth(t *testing.T) {
	srv, _, conn := startServer(t, testConfig())
	hc := healthpb.NewHealthClient(conn)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return resp.GetStatus()
	}
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
			if got := check(service); got != want {
				t.Errorf("%s: Check(%q) = %v, want %v", step.name, service, got, want)
			}
		}
	}
	if _, err := hc.Check(testContext(t), &healthpb.HealthCheckRequest{Service: "no.Such"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(no.Such): %v, want NotFound", err)
	}
}

func TestReflection(t *testing.T) {
	tests := []struct {
		name       string
		reflection bool
		wantCode   codes.Code
	}{
		{name: "on", reflection: true, wantCode: codes.OK},
		{name: "off", reflection: false, wantCode: codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Reflection = tt.reflection
			_, _, conn := startServer(t, cfg)
			services, err := listServices(testContext(t), conn)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("list services: %v, want code %v", err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				return
			}
			want := []string{"foo.Foo", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
			if diff := cmp.Diff(want, services); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
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
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
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

func TestEchoExemplarSampling(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := &echoServer{maxNameBytes: 16, metrics: newEchoMetrics(reg)}
	s.metrics.exemplars = platform.NewExemplarSampler(time.Hour) // no second exemplar of a success until the test says so
	call := func(id, name string) {
		t.Helper()
		// The context the server's first interceptor gives a call whose
		// caller sent this id.
		ctx := platform.IncomingRequestID(metadata.NewIncomingContext(t.Context(), metadata.Pairs(platform.RequestIDHeader, id)))
		s.Echo(ctx, &foopb.EchoRequest{Name: name}) //nolint:errcheck // failures are part of the test
	}
	call("first", "n")
	call("second", "n") // within the interval: no exemplar
	call("bad-1", strings.Repeat("x", 17))
	call("bad-2", strings.Repeat("x", 17)) // failures always carry one

	if got := exemplarLabels(t, reg, resultOK, platform.RequestIDKey); !slices.Equal(got, []string{"first"}) {
		t.Errorf("exemplars of successes = %q, want only %q", got, "first")
	}
	// Each bucket keeps its newest exemplar; the two failures may fall in one
	// bucket or in two.
	if got := exemplarLabels(t, reg, resultError, platform.RequestIDKey); !slices.Contains(got, "bad-2") || slices.ContainsFunc(got, func(id string) bool { return id != "bad-1" && id != "bad-2" }) {
		t.Errorf("exemplars of failures = %q, want %q and at most %q besides", got, "bad-2", "bad-1")
	}
	s.metrics.exemplars = platform.NewExemplarSampler(0) // the interval has passed
	call("third", "n")
	if got := exemplarLabels(t, reg, resultOK, platform.RequestIDKey); !slices.Contains(got, "third") || slices.Contains(got, "second") {
		t.Errorf("exemplars of successes after the interval = %q, want %q (and never %q)", got, "third", "second")
	}
}

func TestCallLogs(t *testing.T) {
	tests := []struct {
		level    zapcore.Level
		wantLogs int
	}{
		{level: zapcore.DebugLevel, wantLogs: 1},
		{level: zapcore.InfoLevel, wantLogs: 0}, // the interceptor is not even installed
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			core, logs := observer.New(tt.level)
			_, _, conn := startServerLogging(t, testConfig(), zap.New(core))
			if _, err := foopb.NewFooClient(conn).Echo(testContext(t), &foopb.EchoRequest{Name: "n"}); err != nil {
				t.Fatal(err)
			}
			calls := logs.FilterField(zap.String("grpc.method", "echo")).All()
			if len(calls) != tt.wantLogs {
				t.Fatalf("%d call log lines at level %v, want %d: %v", len(calls), tt.level, tt.wantLogs, logs.All())
			}
			if tt.wantLogs == 0 {
				return
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
