package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
)

// seriesCounts returns, for each metric family in g, the number of series
// Prometheus stores from one scrape of it: one per counter, gauge or untyped
// metric; buckets, +Inf, _sum and _count per histogram; quantiles, _sum and
// _count per summary.
func seriesCounts(t *testing.T, g prometheus.Gatherer) map[string]int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	counts := make(map[string]int, len(mfs))
	for _, mf := range mfs {
		n := 0
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				n += len(m.GetHistogram().GetBucket()) + 3
			case dto.MetricType_SUMMARY:
				n += len(m.GetSummary().GetQuantile()) + 2
			default:
				n++
			}
		}
		counts[mf.GetName()] = n
	}
	return counts
}

// counterSum is the sum of every series of the counter name in g.
func counterSum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestMetricsCardinality checks that the number of series depends on the
// code, never on the traffic: after ten times more calls, with other names,
// other trace ids, errors and unknown methods, the server exposes the same
// series as before.
func TestMetricsCardinality(t *testing.T) {
	_, reg, conn := startServer(t, testConfig())
	client := foopb.NewFooClient(conn)
	calls := 0

	// send makes n calls cycling over distinct names (one in ten too long, an
	// INVALID_ARGUMENT) and distinct trace ids, plus a call to a method that
	// does not exist, all labelled by prefix.
	send := func(prefix string, n, names int) {
		t.Helper()
		for i := range n {
			name := fmt.Sprintf("%s-%d", prefix, i%names)
			wantCode := codes.OK
			if i%10 == 9 {
				name = strings.Repeat("x", 17) + name
				wantCode = codes.InvalidArgument
			}
			// Each call its own trace, as the caller's traceparent says.
			ctx := metadata.AppendToOutgoingContext(testContext(t), "traceparent", fmt.Sprintf("00-%032x-%016x-01", calls+1, i+1))
			if _, err := client.Echo(ctx, &foopb.EchoRequest{Name: name}); status.Code(err) != wantCode {
				t.Fatalf("Echo(%q) = %v, want code %v", name, err, wantCode)
			}
			calls++
		}
		err := conn.Invoke(testContext(t), "/foo.Foo/"+prefix, &foopb.EchoRequest{}, &foopb.EchoReply{}, grpc.WaitForReady(true))
		if got := status.Code(err); got != codes.Unimplemented {
			t.Fatalf("calling /foo.Foo/%s: code %v (%v), want Unimplemented", prefix, got, err)
		}
	}

	send("first", 100, 10)
	before := seriesCounts(t, reg)
	send("second", 1000, 100)
	after := seriesCounts(t, reg)

	if got := counterSum(t, reg, "echo_requests_total"); got != float64(calls) {
		t.Fatalf("echo_requests_total = %v, want %d: the calls did not all reach the handler", got, calls)
	}
	if before["echo_request_duration_seconds"] == 0 || before["grpc_server_handled_total"] == 0 {
		t.Fatalf("series before the second batch lack echo or grpc_server metrics: %v", before)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("series per metric after 10x more calls with new names (-before +after):\n%s", diff)
	}
}
