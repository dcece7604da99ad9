package platform

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

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

// Exemplar returns the exemplar labels {trace_id: id} of the call in ctx
// when its trace is sampled (exported, so the id leads to a trace) and the
// sampler lets one through, else nil. It has the signature of
// go-grpc-middleware's WithExemplarFromContext. Most calls cost a clock read
// and a load: the call's span, a walk up its context, is looked up only
// once an exemplar is due.
func (s *ExemplarSampler) Exemplar(ctx context.Context) prometheus.Labels {
	now := time.Now().UnixNano()
	last := s.last.Load()
	if now-last < int64(s.interval) {
		return nil
	}
	sc, ok := callSpan(ctx)
	if !ok || !sc.IsSampled() || !s.last.CompareAndSwap(last, now) {
		return nil
	}
	return prometheus.Labels{TraceIDKey: sc.TraceID().String()}
}

// TraceExemplar returns the exemplar labels {trace_id: id} of the span in
// ctx, sampled or not (its id is in the call's log lines), or nil when ctx
// carries no valid span.
func TraceExemplar(ctx context.Context) prometheus.Labels {
	sc, ok := callSpan(ctx)
	if !ok {
		return nil
	}
	return prometheus.Labels{TraceIDKey: sc.TraceID().String()}
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
