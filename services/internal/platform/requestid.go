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

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id of the call in ctx: the one WithRequestID
// gave it, else the caller's valid x-request-id, else "".
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

// WithIncomingRequestID returns ctx as is when the caller sent a valid
// x-request-id (RequestID reads it from there, when it is needed), else ctx
// carrying a new id.
func WithIncomingRequestID(ctx context.Context) context.Context {
	if callerRequestID(ctx) != "" {
		return ctx
	}
	return WithRequestID(ctx, NewRequestID())
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

// Take reports whether an exemplar may be recorded now.
func (s *ExemplarSampler) Take() bool {
	now := time.Now().UnixNano()
	last := s.last.Load()
	return now-last >= int64(s.interval) && s.last.CompareAndSwap(last, now)
}

// Exemplar returns the exemplar labels of the call in ctx ({request_id: id})
// when the sampler lets one through, else nil (no exemplar). It has the
// signature of go-grpc-middleware's WithExemplarFromContext.
func (s *ExemplarSampler) Exemplar(ctx context.Context) prometheus.Labels {
	if !s.Take() {
		return nil
	}
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
