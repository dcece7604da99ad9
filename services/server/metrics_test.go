package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// series returns the series of the family name in g whose labels include
// want, failing the test when there is none.
func series(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					n++
				}
			}
			if mf.GetName() == name && n == len(want) {
				out = append(out, m)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no series %s%v", name, want)
	}
	return out
}

// sum adds up the series of series(): counter and gauge values, histogram
// sample counts.
func sum(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	var total float64
	for _, m := range series(t, g, name, want) {
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return total
}

// exemplars returns the trace ids of the exemplars on the buckets of the
// histogram series of series().
func exemplars(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) []string {
	t.Helper()
	var ids []string
	for _, m := range series(t, g, name, want) {
		for _, b := range m.GetHistogram().GetBucket() {
			for _, l := range b.GetExemplar().GetLabel() {
				if l.GetName() == platform.TraceIDKey {
					ids = append(ids, l.GetValue())
				}
			}
		}
	}
	return ids
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
	ok, failed := map[string]string{"result": platform.ResultOK}, map[string]string{"result": platform.ResultError}
	unsampled := call(1, false, "n") // leads to no trace: no exemplar
	first := call(2, true, "n")
	second := call(3, true, "n") // within the interval: no exemplar
	bad1 := call(4, true, strings.Repeat("x", 17))
	bad2 := call(5, false, strings.Repeat("x", 17)) // failures always carry one: their id is in the logs

	if got := exemplars(t, reg, "echo_request_duration_seconds", ok); !slices.Equal(got, []string{first}) {
		t.Errorf("exemplars of successes = %q, want only %q (not the unsampled %q)", got, first, unsampled)
	}
	// Each bucket keeps its newest exemplar; the two failures may fall in one
	// bucket or in two.
	if got := exemplars(t, reg, "echo_request_duration_seconds", failed); !slices.Contains(got, bad2) || slices.ContainsFunc(got, func(id string) bool { return id != bad1 && id != bad2 }) {
		t.Errorf("exemplars of failures = %q, want %q and at most %q besides", got, bad2, bad1)
	}
	s.metrics.exemplars = platform.NewExemplarSampler(0) // the interval has passed
	third := call(6, true, "n")
	if got := exemplars(t, reg, "echo_request_duration_seconds", ok); !slices.Contains(got, third) || slices.Contains(got, second) {
		t.Errorf("exemplars of successes after the interval = %q, want %q (and never %q)", got, third, second)
	}
}

// TestEchoMetrics: each call is counted once, by result, in the echo metrics
// and the standard gRPC ones, and none is left in flight. The number of
// series depends on the code, never on the traffic: after ten times more
// calls, with other names, other trace ids, errors and unknown methods, the
// server exposes the same series as before.
func TestEchoMetrics(t *testing.T) {
	srv := startServer(t, testConfig(), nil)
	calls := 0
	// send makes n calls cycling over distinct names (one in ten too long, an
	// INVALID_ARGUMENT) and distinct trace ids, plus a call to a method that
	// does not exist, all labelled by prefix.
	send := func(prefix string, n, names int) {
		t.Helper()
		for i := range n {
			name, wantCode := fmt.Sprintf("%s-%d", prefix, i%names), codes.OK
			if i%10 == 9 {
				name, wantCode = strings.Repeat("x", 17)+name, codes.InvalidArgument
			}
			// Each call its own trace, as the caller's traceparent says.
			ctx := metadata.AppendToOutgoingContext(testContext(t), "traceparent", fmt.Sprintf("00-%032x-%016x-01", calls+1, i+1))
			if _, err := srv.foo.Echo(ctx, &foopb.EchoRequest{Name: name}); status.Code(err) != wantCode {
				t.Fatalf("Echo(%q) = %v, want code %v", name, err, wantCode)
			}
			calls++
		}
		err := srv.conn.Invoke(testContext(t), "/foo.Foo/"+prefix, &foopb.EchoRequest{}, &foopb.EchoReply{}, grpc.WaitForReady(true))
		if got := status.Code(err); got != codes.Unimplemented {
			t.Fatalf("calling /foo.Foo/%s: code %v (%v), want Unimplemented", prefix, got, err)
		}
	}
	// seriesCounts is the number of series of each family.
	seriesCounts := func() map[string]int {
		mfs, err := srv.reg.Gather()
		if err != nil {
			t.Fatalf("Gather: %v", err)
		}
		counts := map[string]int{}
		for _, mf := range mfs {
			counts[mf.GetName()] = len(mf.GetMetric())
		}
		return counts
	}

	send("first", 100, 10)
	const okCalls, badCalls = 90, 10
	ok, failed := map[string]string{"api": apiEcho, "result": platform.ResultOK}, map[string]string{"api": apiEcho, "result": platform.ResultError}
	echo := map[string]string{"grpc_service": "foo.Foo", "grpc_method": "echo", "grpc_type": "unary"}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"echo_requests_total", ok, okCalls},
		{"echo_requests_total", failed, badCalls},
		{"echo_request_duration_seconds", ok, okCalls},
		{"echo_request_duration_seconds", failed, badCalls},
		{"echo_requests_in_flight", nil, 0},
		{"grpc_server_handled_total", nil, okCalls + badCalls},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "echo", "grpc_code": "OK"}, okCalls},
		{"grpc_server_handled_total", map[string]string{"grpc_method": "echo", "grpc_code": "InvalidArgument"}, badCalls},
		{"grpc_server_handling_seconds", echo, okCalls + badCalls},
	} {
		if got := sum(t, srv.reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	// Pre-initialised: every code of echo exists before it happens.
	if got := len(series(t, srv.reg, "grpc_server_handled_total", echo)); got != int(codes.Unauthenticated)+1 {
		t.Errorf("grpc_server_handled_total has %d series of echo, want one per code", got)
	}

	before := seriesCounts()
	send("second", 1000, 100)
	if got := sum(t, srv.reg, "echo_requests_total", nil); got != float64(calls) {
		t.Fatalf("echo_requests_total = %v, want %d: the calls did not all reach the handler", got, calls)
	}
	if diff := cmp.Diff(before, seriesCounts()); diff != "" {
		t.Errorf("series per metric after 10x more calls with new names (-before +after):\n%s", diff)
	}
}
