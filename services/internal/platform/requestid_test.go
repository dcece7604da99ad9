package platform

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// TestIncomingRequestID: a call keeps its caller's valid id, any other
// gets a new one.
func TestIncomingRequestID(t *testing.T) {
	tests := []struct {
		name, header string
		keep         bool // the caller's id is kept, else a new one
	}{
		{name: "caller's id", header: "req-42", keep: true},
		{name: "longest id", header: strings.Repeat("a", 64), keep: true},
		{name: "too long", header: strings.Repeat("a", 65)},
		{name: "space", header: "req 42"},
		{name: "not ASCII", header: "é"},
		{name: "empty", header: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs(RequestIDHeader, tt.header))
			got := RequestID(IncomingRequestID(ctx))
			if tt.keep && got != tt.header {
				t.Errorf("request id = %q, want the caller's %q", got, tt.header)
			}
			if !tt.keep && (got == tt.header || len(got) != 16) {
				t.Errorf("request id = %q, want a new 16-digit id", got)
			}
		})
	}
	if got := RequestID(IncomingRequestID(context.Background())); len(got) != 16 {
		t.Errorf("request id without metadata = %q, want a new 16-digit id", got)
	}
}

// FuzzRequestIDExemplar checks that no x-request-id makes the exemplar
// invalid: ObserveWithExemplar panics on labels over 128 runes or not UTF-8.
func FuzzRequestIDExemplar(f *testing.F) {
	for _, seed := range []string{"", "req-42", "req 42", "\xff\xfe", "é", strings.Repeat("a", 200)} {
		f.Add(seed)
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "h"})
	f.Fuzz(func(t *testing.T, header string) {
		ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs(RequestIDHeader, header))
		id := RequestID(IncomingRequestID(ctx))
		if !ValidRequestID(id) {
			t.Fatalf("request id for x-request-id %q = %q, not a valid id", header, id)
		}
		h.(prometheus.ExemplarObserver).ObserveWithExemplar(1, prometheus.Labels{RequestIDKey: id})
	})
}

// TestOutgoingRequestID: the client's call carries its id both ways, for
// its own logs and to the server, which keeps it.
func TestOutgoingRequestID(t *testing.T) {
	ctx, id := OutgoingRequestID(t.Context())
	if !ValidRequestID(id) || RequestID(ctx) != id {
		t.Fatalf("OutgoingRequestID = %q, RequestID of its context %q", id, RequestID(ctx))
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	if got := md.Get(RequestIDHeader); len(got) != 1 || got[0] != id {
		t.Fatalf("outgoing %s = %v, want [%s]", RequestIDHeader, got, id)
	}
	// The server's side of the same call.
	server := IncomingRequestID(metadata.NewIncomingContext(context.Background(), md))
	if got := RequestID(server); got != id {
		t.Errorf("the server's request id = %q, want the client's %q", got, id)
	}
	if _, id2 := OutgoingRequestID(t.Context()); id2 == id {
		t.Errorf("two calls got the same id %q", id)
	}
}

func TestExemplarSampler(t *testing.T) {
	s := NewExemplarSampler(time.Hour)
	ctx, id := OutgoingRequestID(t.Context())
	if got := s.Exemplar(ctx); got[RequestIDKey] != id {
		t.Errorf("first exemplar = %v, want request_id %s", got, id)
	}
	if got := s.Exemplar(ctx); got != nil {
		t.Errorf("second exemplar within the interval = %v, want none", got)
	}
	if got := NewExemplarSampler(0).Exemplar(t.Context()); got != nil {
		t.Errorf("exemplar of a call without a request id = %v, want none", got)
	}
}

func TestServerFaultCodes(t *testing.T) {
	want := []codes.Code{codes.Unknown, codes.DeadlineExceeded, codes.Internal, codes.Unavailable, codes.DataLoss}
	if got := ServerFaultCodes(); !slices.Equal(got, want) {
		t.Errorf("ServerFaultCodes() = %v, want %v", got, want)
	}
	for _, c := range []codes.Code{codes.OK, codes.InvalidArgument, codes.ResourceExhausted, codes.Unimplemented, codes.Canceled} {
		if ServerFault(c) {
			t.Errorf("ServerFault(%v) = true, want the caller's", c)
		}
	}
}
