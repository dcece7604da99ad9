package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc"

	"example.com/grpc-metrics/infra/proctest"
	"example.com/grpc-metrics/proto/foopb"
)

type foo struct{ foopb.UnimplementedFooServer }

func (foo) Echo(_ context.Context, r *foopb.EchoRequest) (*foopb.EchoReply, error) {
	return &foopb.EchoReply{Message: r.GetName() + "!"}, nil
}

func TestEcho(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, foo{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	if got, err := Echo(t.Context(), lis.Addr().String(), "a"); err != nil || got != "a!" {
		t.Errorf("Echo: %q, %v", got, err)
	}
	lis.Close()
	s.Stop()
	if _, err := Echo(t.Context(), lis.Addr().String(), "a"); err == nil {
		t.Error("Echo of a stopped server succeeded")
	}
}

const metrics = `# TYPE echo_client_calls_total counter
echo_client_calls_total{result="ok"} 41
echo_client_calls_total{result="error"} 2
# TYPE echo_requests_total counter
echo_requests_total{api="echo",result="ok"} 17
# TYPE echo_server_build_info gauge
echo_server_build_info{revision="0123abcd",version="dev"} 1
`

func TestCallsAndRevision(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, metrics) }))
	t.Cleanup(srv.Close)
	c := &CallCounter{pod: "client-0", url: srv.URL}
	if ok, failed := c.Read(t); ok != 41 || failed != 2 {
		t.Errorf("Read: %v ok, %v failed, want 41 and 2", ok, failed)
	}
	if n, err := AnsweredCalls(srv.URL); err != nil || n != 17 {
		t.Errorf("AnsweredCalls: %v, %v, want 17", n, err)
	}
	mfs, err := proctest.Scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := RevisionOf(mfs, "server"); got != "0123abcd" {
		t.Errorf("RevisionOf: %q", got)
	}
	if got := RevisionOf(mfs, "client"); got != "" {
		t.Errorf("RevisionOf a program with no build info: %q", got)
	}
	var into map[string]any
	if err := GetJSON(t.Context(), srv.URL+"/missing", &into); err == nil {
		t.Error("GetJSON of a text page succeeded")
	}
}

// A trace as Jaeger's API gives it: the client's span, the server's as its
// child.
const trace = `{"data": [{"traceID": "t1",
  "spans": [
    {"spanID": "c", "processID": "p1", "tags": [{"key": "span.kind", "value": "client"}]},
    {"spanID": "s", "processID": "p2", "tags": [{"key": "span.kind", "value": "server"}],
     "references": [{"refType": "CHILD_OF", "spanID": "c"}]}],
  "processes": {
    "p1": {"serviceName": "client", "tags": [{"key": "k8s.pod.name", "value": "client-0"}]},
    "p2": {"serviceName": "server", "tags": [{"key": "k8s.pod.name", "value": "server-1"}]}}}]}`

func TestTrace(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/traces/t1" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, trace)
	}))
	t.Cleanup(srv.Close)
	tr, ok := GetTrace(t.Context(), srv.URL, "t1")
	if !ok {
		t.Fatal("trace t1 not found")
	}
	if !tr.ClientAndServer() {
		t.Error("ClientAndServer: false for a server span child of a client span")
	}
	if got := tr.PodOf("server"); got != "server-1" {
		t.Errorf("PodOf(server) = %q", got)
	}
	if _, ok := GetTrace(t.Context(), srv.URL, "t2"); ok {
		t.Error("a missing trace found")
	}
	// The server span's parent is another server span: not the pair.
	var ts Traces
	if err := json.Unmarshal([]byte(trace), &ts); err != nil {
		t.Fatal(err)
	}
	orphan := ts.Data[0]
	orphan.Spans[1].References[0].SpanID = "s"
	if orphan.ClientAndServer() {
		t.Error("ClientAndServer: true without a client parent")
	}
}
