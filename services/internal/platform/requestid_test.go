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

// TestWithIncomingRequestID: a call keeps its caller's valid id, any other
// gets a new one.
func TestWithIncomingRequestID(t *testing.T) {
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
			got := RequestID(WithIncomingRequestID(ctx))
			if tt.keep && got != tt.header {
				t.Errorf("request id = %q, want the caller's %q", got, tt.header)
			}
			if !tt.keep && (got == tt.header || len(got) != 16) {
				t.Errorf("request id = %q, want a new 16-digit id", got)
			}
		})
	}
	if got := RequestID(WithIncomingRequestID(context.Background())); len(got) != 16 {
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
		id := RequestID(WithIncomingRequestID(ctx))
		if !ValidRequestID(id) {
			t.Fatalf("request id for x-request-id %q = %q, not a valid id", header, id)
		}
		h.(prometheus.ExemplarObserver).ObserveWithExemplar(1, prometheus.Labels{RequestIDKey: id})
	})
}

func TestExemplarSampler(t *testing.T) {
	s := NewExemplarSampler(time.Hour)
	ctx := WithRequestID(t.Context(), "id-1")
	if got := s.Exemplar(ctx); got[RequestIDKey] != "id-1" {
		t.Errorf("first exemplar = %v, want request_id id-1", got)
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
