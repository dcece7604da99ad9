package main

import (
	"cmp"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// TestEcho: a name up to the limit comes back as is; a longer one, or a
// message over the receive limit, is refused with a code and message that
// say why, and only what the handler saw is counted. The tightest message
// limit the configuration allows (maxRecv 0: requestBytes) lets a name at
// the limit through, across the step of the length prefix from one byte to
// two.
func TestEcho(t *testing.T) {
	tests := []struct {
		maxName, maxRecv int
		req              string
		wantCode         codes.Code
		want             string // the reply's message, or the error's
	}{
		{maxName: 16, maxRecv: 64, req: "world", want: "world"},
		{maxName: 16, maxRecv: 64, req: "", want: ""},
		{maxName: 16, maxRecv: 64, req: strings.Repeat("é", 8), want: strings.Repeat("é", 8)},
		{maxName: 16, maxRecv: 64, req: strings.Repeat("x", 17), wantCode: codes.InvalidArgument, want: "name is 17 bytes, longer than the limit of 16 bytes"},
		{maxName: 16, maxRecv: 64, req: strings.Repeat("é", 9), wantCode: codes.InvalidArgument, want: "name is 18 bytes, longer than the limit of 16 bytes"},
		{maxName: 16, maxRecv: 64, req: strings.Repeat("x", 100), wantCode: codes.ResourceExhausted, want: "grpc: received message larger than max (102 vs. 64)"},
		{maxName: 16, req: strings.Repeat("x", 16), want: strings.Repeat("x", 16)},
		{maxName: 16, req: strings.Repeat("x", 17), wantCode: codes.ResourceExhausted, want: "grpc: received message larger than max (19 vs. 18)"},
		{maxName: 127, req: strings.Repeat("x", 127), want: strings.Repeat("x", 127)},
		{maxName: 128, req: strings.Repeat("x", 128), want: strings.Repeat("x", 128)},
		{maxName: 1024, req: strings.Repeat("x", 1024), want: strings.Repeat("x", 1024)},
		{maxName: 1024, req: strings.Repeat("x", 1025), wantCode: codes.ResourceExhausted, want: "grpc: received message larger than max (1028 vs. 1027)"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d bytes, limits %d/%d", len(tt.req), tt.maxName, tt.maxRecv), func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxNameBytes, cfg.MaxRecvMsgBytes = tt.maxName, cmp.Or(tt.maxRecv, requestBytes(tt.maxName))
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			srv := startServer(t, cfg, nil)
			reply, err := srv.foo.Echo(testContext(t), &foopb.EchoRequest{Name: tt.req})
			got := reply.GetMessage()
			if err != nil {
				got = status.Convert(err).Message()
			}
			if status.Code(err) != tt.wantCode || got != tt.want {
				t.Errorf("Echo: code %v, %q; want %v, %q", status.Code(err), got, tt.wantCode, tt.want)
			}
			handled := map[codes.Code]map[string]float64{codes.OK: {platform.ResultOK: 1}, codes.InvalidArgument: {platform.ResultError: 1}}[tt.wantCode]
			for _, result := range []string{platform.ResultOK, platform.ResultError} {
				if got := sum(t, srv.reg, "echo_requests_total", map[string]string{"result": result}); got != handled[result] {
					t.Errorf("echo_requests_total{result=%s} = %v, want %v", result, got, handled[result])
				}
			}
		})
	}
}

// FuzzEcho checks the handler on any name: it echoes names within the limit
// unchanged, rejects longer ones with INVALID_ARGUMENT naming the limit, and
// never panics. Seeds: the f.Add values and testdata/fuzz/FuzzEcho.
func FuzzEcho(f *testing.F) {
	for _, seed := range []string{"", "world", strings.Repeat("x", 16), strings.Repeat("x", 17), "é\x00\xff"} {
		f.Add(seed)
	}
	s := &echoServer{maxNameBytes: 16, metrics: newEchoMetrics(prometheus.NewRegistry())}
	f.Fuzz(func(t *testing.T, name string) {
		reply, err := s.Echo(t.Context(), &foopb.EchoRequest{Name: name})
		if len(name) > s.maxNameBytes {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "limit of 16 bytes") {
				t.Fatalf("Echo(%d bytes) = %v, want INVALID_ARGUMENT naming the limit", len(name), err)
			}
			return
		}
		if err != nil || reply.GetMessage() != name {
			t.Fatalf("Echo(%q) = %q, %v; want the name back", name, reply.GetMessage(), err)
		}
	})
}

// rawCodec sends bytes as they are, to put malformed messages on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestEchoMalformedRequests: grpc-go refuses a request that is not an
// EchoRequest before the handler, leaks nothing, and the server answers on.
func TestEchoMalformedRequests(t *testing.T) {
	srv := startServer(t, testConfig(), nil)
	// Warm the connection up so its goroutines are in the baseline.
	if _, err := srv.foo.Echo(testContext(t), &foopb.EchoRequest{Name: "warm"}); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	for name, wire := range map[string][]byte{
		"invalid UTF-8 name":      {0x0a, 0x02, 0xff, 0xfe}, // field 1 (name), length 2, bytes that are not UTF-8
		"length past the end":     {0x0a, 0x09, 'a'},
		"truncated tag":           {0x80},
		"group start without end": {0x0b},
	} {
		for range 50 { // repeated, so a leak per call would show
			var reply []byte
			err := srv.conn.Invoke(testContext(t), foopb.Foo_Echo_FullMethodName, &wire, &reply, grpc.ForceCodec(rawCodec{}))
			if got := status.Code(err); got != codes.Internal {
				t.Fatalf("%s: code %v (%v), want %v", name, got, err, codes.Internal)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > baseline {
		t.Errorf("%d goroutines after 200 malformed calls, baseline %d: something leaked", got, baseline)
	}
	// Only the warm-up call reached the handler.
	if got := sum(t, srv.reg, "echo_requests_total", nil); got != 1 {
		t.Errorf("echo_requests_total = %v after malformed requests, want 1: they must not reach the handler", got)
	}
	reply, err := srv.foo.Echo(testContext(t), &foopb.EchoRequest{Name: "still here"})
	if err != nil || reply.GetMessage() != "still here" {
		t.Fatalf("Echo after malformed requests = %q, %v; want %q", reply.GetMessage(), err, "still here")
	}
}
