package platform

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
)

// RequestIDKey names a call's request id wherever it appears: the log field
// of both programs and the exemplar label of every latency histogram.
const RequestIDKey = "request_id"

// RequestIDHeader is the gRPC metadata key that carries a call's request id
// from the client to the server.
const RequestIDHeader = "x-request-id"

// maxRequestIDBytes bounds a caller's request id: exemplar labels may hold
// 128 runes in all, and request_id takes 10 of them.
const maxRequestIDBytes = 64

// NewRequestID returns a random request id of 16 hex digits.
func NewRequestID() string {
	return strconv.FormatUint(rand.Uint64()|1<<63, 16)
}

// ValidRequestID reports whether id is 1 to 64 printable ASCII characters
// without spaces: what a log line and an exemplar label can carry as is.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDBytes {
		return false
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// A call's request id is set in one of two places and read in one:
//
//   - the client gives each call a new one (OutgoingRequestID): in its own
//     context and in the x-request-id metadata the server receives;
//   - the server keeps the caller's when it is valid, else gives the call a
//     new one (IncomingRequestID, from the first interceptor);
//   - both read it with RequestID.

type requestIDKey struct{}

// OutgoingRequestID returns ctx carrying a new request id, for the caller's
// own logs and exemplars and as x-request-id metadata for the server, and
// the id.
func OutgoingRequestID(ctx context.Context) (context.Context, string) {
	id := NewRequestID()
	ctx = context.WithValue(ctx, requestIDKey{}, id)
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id), id
}

// IncomingRequestID returns the context of an incoming call with its
// request id: as is when the caller sent a valid x-request-id (RequestID
// reads it from the metadata, and only when something needs it: no context
// per call), else carrying a new id.
func IncomingRequestID(ctx context.Context) context.Context {
	if callerRequestID(ctx) != "" {
		return ctx
	}
	return context.WithValue(ctx, requestIDKey{}, NewRequestID())
}

// RequestID returns the request id of the call in ctx, or "" for a context
// that went through neither OutgoingRequestID nor IncomingRequestID.
func RequestID(ctx context.Context) string {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	return callerRequestID(ctx)
}

// callerRequestID returns the caller's x-request-id when it is a valid one.
func callerRequestID(ctx context.Context) string {
	if ids := metadata.ValueFromIncomingContext(ctx, RequestIDHeader); len(ids) > 0 && ValidRequestID(ids[0]) {
		return ids[0]
	}
	return ""
}

// ExemplarSampler lets through at most one exemplar per interval. An
// exemplar costs a label map and a timestamp per observation, and Prometheus
// keeps only the newest of each bucket per scrape: a few a second are plenty.
type ExemplarSampler struct {
	interval time.Duration
	last     atomic.Int64 // Unix ns of the last exemplar let through
}

// NewExemplarSampler returns a sampler letting one exemplar through per interval.
func NewExemplarSampler(interval time.Duration) *ExemplarSampler {
	return &ExemplarSampler{interval: interval}
}

// take reports whether an exemplar may be recorded now.
func (s *ExemplarSampler) take() bool {
	now := time.Now().UnixNano()
	last := s.last.Load()
	return now-last >= int64(s.interval) && s.last.CompareAndSwap(last, now)
}

// Exemplar returns the exemplar labels of the call in ctx when the sampler
// lets one through, else nil (no exemplar). It has the signature of
// go-grpc-middleware's WithExemplarFromContext. The sampler decides before
// the id is looked up: most calls cost one atomic load.
func (s *ExemplarSampler) Exemplar(ctx context.Context) prometheus.Labels {
	if !s.take() {
		return nil
	}
	return RequestIDExemplar(ctx)
}

// RequestIDExemplar returns the exemplar labels {request_id: id} of the
// call in ctx, or nil when it has no request id.
func RequestIDExemplar(ctx context.Context) prometheus.Labels {
	if id := RequestID(ctx); id != "" {
		return prometheus.Labels{RequestIDKey: id}
	}
	return nil
}

// NativeHistogram makes a histogram native as well as classic: a bucket
// every 10% (factor 1.1), at most 160 buckets (the resolution is halved
// beyond), reset at most hourly. Prometheus stores both when it scrapes with
// scrape_native_histograms and always_scrape_classic_histograms.
func NativeHistogram(o *prometheus.HistogramOpts) {
	o.NativeHistogramBucketFactor = 1.1
	o.NativeHistogramMaxBucketNumber = 160
	o.NativeHistogramMinResetDuration = time.Hour
}
