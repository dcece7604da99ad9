package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
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

// startServer serves a server built from cfg over bufconn and returns it, its
// registry and a connection to it.
func startServer(t *testing.T, cfg Config) (*grpcServer, *prometheus.Registry, *grpc.ClientConn) {
	t.Helper()
	return startServerLogging(t, cfg, zaptest.NewLogger(t))
}

// startServerLogging is startServer with the server's logger.
func startServerLogging(t *testing.T, cfg Config, log *zap.Logger) (*grpcServer, *prometheus.Registry, *grpc.ClientConn) {
	t.Helper()
	srv, reg, conn, _ := startServerTracing(t, cfg, log)
	return srv, reg, conn
}

// startServerTracing is startServerLogging that also returns the recorder
// of the server's spans.
func startServerTracing(t *testing.T, cfg Config, log *zap.Logger) (*grpcServer, *prometheus.Registry, *grpc.ClientConn, *tracetest.SpanRecorder) {
	t.Helper()
	reg := prometheus.NewRegistry()
	tracing, spans := platformtest.Tracing(t, "server", log)
	srv := newGRPCServer(cfg, log, reg, tracing)
	conn := platformtest.Dial(t, srv.Server)
	return srv, reg, conn, spans
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEcho: a name up to the limit comes back as is; a longer one, or a
// message over the receive limit, is refused with a code and message that
// say why.
func TestEcho(t *testing.T) {
	_, reg, conn := startServer(t, testConfig())
	client := foopb.NewFooClient(conn)
	tests := []struct {
		name     string
		req      string
		wantCode codes.Code
		want     string // the reply's message, or the error's
	}{
		{name: "ascii", req: "world", want: "world"},
		{name: "empty", req: "", want: ""},
		{name: "multibyte at the limit", req: strings.Repeat("é", 8), want: strings.Repeat("é", 8)},
		{name: "name over the limit", req: strings.Repeat("x", 17), wantCode: codes.InvalidArgument,
			want: "name is 17 bytes, longer than the limit of 16 bytes"},
		{name: "multibyte name over the limit", req: strings.Repeat("é", 9), wantCode: codes.InvalidArgument,
			want: "name is 18 bytes, longer than the limit of 16 bytes"},
		{name: "message over the receive limit", req: strings.Repeat("x", 100), wantCode: codes.ResourceExhausted,
			want: "grpc: received message larger than max (102 vs. 64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, err := client.Echo(testContext(t), &foopb.EchoRequest{Name: tt.req})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Echo: code %v (%v), want %v", got, err, tt.wantCode)
			}
			got := reply.GetMessage()
			if err != nil {
				got = status.Convert(err).Message()
			}
			if got != tt.want {
				t.Errorf("Echo(%q): %q, want %q", tt.req, got, tt.want)
			}
		})
	}
	// Only the long names reached the handler; the oversized message did not.
	if got := echoRequests(t, reg, platform.ResultError); got != 2 {
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
	for result, want := range map[string]float64{platform.ResultOK: 1, platform.ResultError: 0} {
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
	if diff := cmp.Diff(map[string]uint64{platform.ResultOK: okCalls, platform.ResultError: badCalls}, counts); diff != "" {
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
			_, reg, conn, spans := startServerTracing(t, testConfig(), zaptest.NewLogger(t))
			ctx := testContext(t)
			if tt.traceparent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tt.traceparent)
			}
			if _, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: "n"}); err != nil {
				t.Fatalf("Echo: %v", err)
			}
			// The stats handler ends the span once the reply is sent, maybe
			// after the client has it.
			var ended []sdktrace.ReadOnlySpan
			if tt.wantSpan {
				waitFor(t, "the server span", func() bool { return len(spansNamed(spans, "foo.Foo/echo")) > 0 })
			}
			ended = spansNamed(spans, "foo.Foo/echo")
			echoIDs := exemplarLabels(t, reg, "echo_request_duration_seconds", platform.ResultOK)
			grpcIDs := exemplarLabels(t, reg, "grpc_server_handling_seconds", "")
			if !tt.wantSpan {
				if len(ended) != 0 || len(echoIDs) != 0 || len(grpcIDs) != 0 {
					t.Errorf("unsampled call: spans %v, exemplars %q and %q; want none", ended, echoIDs, grpcIDs)
				}
				return
			}
			if len(ended) != 1 {
				t.Fatalf("%d server spans foo.Foo/echo, want 1", len(ended))
			}
			span := ended[0]
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

// spansNamed returns the ended spans called name.
func spansNamed(r *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// exemplarLabels returns the trace ids of the exemplars on the buckets of
// the histogram metric, of its series with the given result ("" for all).
func exemplarLabels(t *testing.T, reg prometheus.Gatherer, metric, result string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == "result" && l.GetValue() == result }) {
				continue
			}
			for _, b := range m.GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == platform.TraceIDKey {
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

func TestEchoExemplarSampling(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := &echoServer{maxNameBytes: 16, metrics: newEchoMetrics(reg)}
	s.metrics.exemplars = platform.NewExemplarSampler(time.Hour) // no second exemplar of a success until the test says so
	// call makes a call in the trace numbered n; sampled or not, as the
	// caller decided.
	call := func(n byte, sampled bool, name string) string {
		t.Helper()
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{15: n}, SpanID: trace.SpanID{7: n}})
		if sampled {
			sc = sc.WithTraceFlags(trace.FlagsSampled)
		}
		s.Echo(trace.ContextWithSpanContext(t.Context(), sc), &foopb.EchoRequest{Name: name}) //nolint:errcheck // failures are part of the test
		return sc.TraceID().String()
	}
	unsampled := call(1, false, "n") // leads to no trace: no exemplar
	first := call(2, true, "n")
	second := call(3, true, "n") // within the interval: no exemplar
	bad1 := call(4, true, strings.Repeat("x", 17))
	bad2 := call(5, false, strings.Repeat("x", 17)) // failures always carry one: their id is in the logs

	if got := exemplarLabels(t, reg, "echo_request_duration_seconds", platform.ResultOK); !slices.Equal(got, []string{first}) {
		t.Errorf("exemplars of successes = %q, want only %q (not the unsampled %q)", got, first, unsampled)
	}
	// Each bucket keeps its newest exemplar; the two failures may fall in one
	// bucket or in two.
	if got := exemplarLabels(t, reg, "echo_request_duration_seconds", platform.ResultError); !slices.Contains(got, bad2) || slices.ContainsFunc(got, func(id string) bool { return id != bad1 && id != bad2 }) {
		t.Errorf("exemplars of failures = %q, want %q and at most %q besides", got, bad2, bad1)
	}
	s.metrics.exemplars = platform.NewExemplarSampler(0) // the interval has passed
	third := call(6, true, "n")
	if got := exemplarLabels(t, reg, "echo_request_duration_seconds", platform.ResultOK); !slices.Contains(got, third) || slices.Contains(got, second) {
		t.Errorf("exemplars of successes after the interval = %q, want %q (and never %q)", got, third, second)
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
