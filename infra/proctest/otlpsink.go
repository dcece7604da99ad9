package proctest

import (
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is a span an OTLP sink received, with the service that sent it.
type Span struct {
	Service                 string
	Name                    string
	Kind                    tracepb.Span_SpanKind
	TraceID, SpanID, Parent string // hex; Parent is "" for a root span
	StatusCode              tracepb.Status_StatusCode
}

// OTLPSink is an OpenTelemetry collector's OTLP/HTTP trace receiver on
// loopback (POST /v1/traces, protobuf) that keeps every span exported to it:
// the programs' exporter points at it through OTEL_EXPORTER_OTLP_ENDPOINT.
type OTLPSink struct {
	srv *http.Server
	lis net.Listener
	mu  sync.Mutex
	got []Span
}

// StartOTLPSink serves an OTLP sink on a free loopback port.
func StartOTLPSink() (*OTLPSink, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &OTLPSink{lis: lis}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.export)
	s.srv = &http.Server{Handler: mux}
	go s.srv.Serve(lis) //nolint:errcheck // ends with Stop
	return s, nil
}

// NewOTLPSink starts an OTLP sink that stops when the test ends.
func NewOTLPSink(t testing.TB) *OTLPSink {
	t.Helper()
	s, err := StartOTLPSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Endpoint is the sink's URL, the value of OTEL_EXPORTER_OTLP_ENDPOINT.
func (s *OTLPSink) Endpoint() string { return "http://" + s.lis.Addr().String() }

// Stop stops the sink: its port refuses connections from then on.
func (s *OTLPSink) Stop() { s.srv.Close() } //nolint:errcheck // closing listeners only

// export keeps the spans of an ExportTraceServiceRequest.
func (s *OTLPSink) export(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collectorpb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var spans []Span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				spans = append(spans, Span{
					Service: service, Name: sp.GetName(), Kind: sp.GetKind(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					Parent: hex.EncodeToString(sp.GetParentSpanId()), StatusCode: sp.GetStatus().GetCode(),
				})
			}
		}
	}
	s.mu.Lock()
	s.got = append(s.got, spans...)
	s.mu.Unlock()
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out) //nolint:errcheck // the exporter retries what it does not get
}

// Spans returns the spans received so far.
func (s *OTLPSink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.got...)
}

// Count returns how many spans of service were received so far.
func (s *OTLPSink) Count(service string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sp := range s.got {
		if sp.Service == service {
			n++
		}
	}
	return n
}

// Trace returns the spans received so far of the trace id.
func (s *OTLPSink) Trace(id string) []Span {
	var out []Span
	for _, sp := range s.Spans() {
		if sp.TraceID == id {
			out = append(out, sp)
		}
	}
	return out
}
