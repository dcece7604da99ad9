package programs_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/proto/foopb"
)

// exporting is the environment that sends a program's spans to sink, in
// batches sent every 100ms so the test need not wait for the default 5s.
func exporting(sink *proctest.OTLPSink) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY=100"}
}

// TestTraces runs both programs exporting to an OTLP sink: every call of the
// client is a trace whose client span has the server's span as its child;
// the trace id of an exemplar of the client's series leads to such a trace;
// a refused call's log line names the caller's trace.
func TestTraces(t *testing.T) {
	sink := proctest.NewOTLPSink(t)
	server := start(t, "server", serverEnv(exporting(sink)...)...)
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	client := start(t, "client", clientEnv(grpcAddr, exporting(sink)...)...)
	clientMetrics := metricsURL(t, client)

	var exemplar string
	proctest.Eventually(t, 10*time.Second, "an exemplar on grpc_client_handling_seconds", func() bool {
		exemplar = traceExemplar(scrape(t, clientMetrics), "grpc_client_handling_seconds")
		return exemplar != ""
	})
	var spans []proctest.Span
	proctest.Eventually(t, 10*time.Second, "the exemplar's trace in the sink, client and server spans", func() bool {
		spans = sink.Trace(exemplar)
		return len(spans) >= 3
	})
	call := findSpan(spans, "client", tracepb.Span_SPAN_KIND_INTERNAL)
	out := findSpan(spans, "client", tracepb.Span_SPAN_KIND_CLIENT)
	in := findSpan(spans, "server", tracepb.Span_SPAN_KIND_SERVER)
	if call == nil || out == nil || in == nil {
		t.Fatalf("trace %s: %+v; want the client's call and client spans and the server's span", exemplar, spans)
	}
	if call.Parent != "" || out.Parent != call.SpanID || in.Parent != out.SpanID || in.Name != "foo.Foo/echo" {
		t.Errorf("trace %s is not call -> client span -> server span foo.Foo/echo: %+v", exemplar, spans)
	}

	// A refused call of a caller with a trace of its own, as grpcurl -H
	// 'traceparent: ...': its log line names the caller's trace. (That the
	// server's span is the child of the caller's is TestEchoTraces', in
	// services/server.)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const traceID, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+parent+"-01")
	name := strings.Repeat("x", 2000) // over SERVER_MAX_NAME_BYTES
	if _, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: name}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Echo: %v, want code %v", err, codes.InvalidArgument)
	}
	proctest.Eventually(t, 5*time.Second, "the refused call's log line", func() bool { return len(server.Events("call_refused")) == 1 })
	refused := server.Events("call_refused")
	if len(refused) != 1 || refused[0]["trace_id"] != traceID || refused[0]["span_id"] == "" {
		t.Errorf("the refused call's log lines: %v, want one with trace_id %s and its span_id", refused, traceID)
	}
}

// findSpan returns the first span of service of kind, or nil.
func findSpan(spans []proctest.Span, service string, kind tracepb.Span_SpanKind) *proctest.Span {
	i := slices.IndexFunc(spans, func(s proctest.Span) bool { return s.Service == service && s.Kind == kind })
	if i < 0 {
		return nil
	}
	return &spans[i]
}

// traceExemplar returns the trace_id of an exemplar on a bucket of the
// histogram family name, or "".
func traceExemplar(mfs map[string]*dto.MetricFamily, name string) string {
	for _, m := range mfs[name].GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			for _, l := range b.GetExemplar().GetLabel() {
				if l.GetName() == "trace_id" {
					return l.GetValue()
				}
			}
		}
		for _, e := range m.GetHistogram().GetExemplars() { // native histograms keep theirs apart
			for _, l := range e.GetLabel() {
				if l.GetName() == "trace_id" {
					return l.GetValue()
				}
			}
		}
	}
	return ""
}

// TestTraceExportFaults: with no collector where the endpoint points, and
// with a collector that goes away, no call fails, and each program warns
// about the export at most once a minute.
func TestTraceExportFaults(t *testing.T) {
	gone := proctest.NewOTLPSink(t)
	gone.Stop() // a port nothing listens on any more
	sink := proctest.NewOTLPSink(t)
	for _, tt := range []struct {
		name     string
		endpoint *proctest.OTLPSink
	}{
		{"no collector", gone},
		{"collector stops", sink},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := exporting(tt.endpoint)
			server := start(t, "server", serverEnv(env...)...)
			client := start(t, "client", clientEnv(server.Addr(t, "grpc", startTimeout), append(env, "CLIENT_RATE=100")...)...)
			clientMetrics := metricsURL(t, client)
			calls := func(result string) float64 {
				return value(scrape(t, clientMetrics), "echo_client_calls_total", map[string]string{"result": result})
			}
			proctest.Eventually(t, 10*time.Second, "calls", func() bool { return calls("ok") >= 100 })
			if tt.endpoint == sink {
				proctest.Eventually(t, 10*time.Second, "spans reach the collector", func() bool { return len(sink.Spans()) > 0 })
				sink.Stop()
			}
			okBefore := calls("ok")
			// Several batches fail meanwhile (one every 100ms), each retried.
			proctest.Eventually(t, 10*time.Second, "300 more calls", func() bool { return calls("ok") >= okBefore+300 })
			if failed := calls("error"); failed != 0 {
				t.Errorf("%v calls failed while spans could not be exported, want 0", failed)
			}
			for _, p := range []*proctest.Process{server, client} {
				if warnings := p.Events("export_failed"); len(warnings) > 1 {
					t.Errorf("%d warnings about the export within a minute, want at most 1: %v", len(warnings), warnings)
				}
				for _, line := range strings.Split(p.Output(), "\n") {
					if strings.Contains(line, `"level":"warn"`) && !strings.Contains(line, "tracing: spans are not exported") ||
						strings.Contains(line, `"level":"error"`) {
						t.Errorf("unexpected log line: %s", line)
					}
				}
			}
			t.Logf("%v calls, 0 failed; warnings: server %d, client %d", calls("ok"),
				len(server.Events("export_failed")),
				len(client.Events("export_failed")))
		})
	}
}

// TestNoEndpointNoExport: without OTEL_EXPORTER_OTLP_ENDPOINT nothing is
// exported and nothing about tracing is logged, yet the server's log line
// of a refused call names a trace.
func TestNoEndpointNoExport(t *testing.T) {
	server := start(t, "server", serverEnv()...)
	conn, err := grpc.NewClient(server.Addr(t, "grpc", startTimeout), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := foopb.NewFooClient(conn).Echo(ctx, &foopb.EchoRequest{Name: strings.Repeat("x", 2000)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Echo: %v, want InvalidArgument", err)
	}
	proctest.Eventually(t, 5*time.Second, "the refused call's log line", func() bool { return len(server.Events("call_refused")) == 1 })
	if id := fmt.Sprint(server.Events("call_refused")[0]["trace_id"]); len(id) != 32 {
		t.Errorf("refused call's trace_id = %q, want 32 hex digits", id)
	}
	if out := server.Output(); strings.Contains(strings.ToLower(out), "otlp") || strings.Contains(out, "tracing") {
		t.Errorf("the server logged about tracing with no endpoint set:\n%s", out)
	}
}
