package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
)

// Label values of the echo metrics. api names the RPC, as in the original
// example; result is "ok" or "error".
const (
	apiEcho     = "echo"
	resultOK    = "ok"
	resultError = "error"
)

// exemplarInterval spaces the latency exemplars of successful calls: each
// costs a request id and a label map, and Prometheus (5s scrapes) keeps only
// the newest of each bucket. Failed calls always carry one.
const exemplarInterval = 100 * time.Millisecond

// observerWithExemplars is a histogram series, which takes both kinds of
// observation.
type observerWithExemplars interface {
	prometheus.Observer
	prometheus.ExemplarObserver
}

// echoMetrics are the application metrics of the echo service: the series of
// echo_request_duration_seconds{api,result} and echo_requests_total{api,result}
// for each result, looked up once, and echo_requests_in_flight.
type echoMetrics struct {
	okDuration, errDuration observerWithExemplars
	okRequests, errRequests prometheus.Counter
	inFlight                prometheus.Gauge

	exemplarInterval time.Duration
	lastExemplar     atomic.Int64 // time of the last exemplar of a success, Unix ns
}

func newEchoMetrics(reg prometheus.Registerer) *echoMetrics {
	f := promauto.With(reg)
	duration := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "echo_request_duration_seconds",
		Help: "Time spent handling echo calls, from the handler's start to its reply.",
		// Echo does no I/O: replies take microseconds, a slow one milliseconds.
		Buckets: prometheus.ExponentialBuckets(0.000_01, 4, 10), // 10µs .. ~2.6s
	}, []string{"api", "result"})
	requests := f.NewCounterVec(prometheus.CounterOpts{
		Name: "echo_requests_total",
		Help: "Echo calls handled, by result.",
	}, []string{"api", "result"})
	// Every series exists from the start, so rate() and the dashboards see
	// zeros, not gaps.
	return &echoMetrics{
		okDuration:  duration.WithLabelValues(apiEcho, resultOK).(observerWithExemplars),
		errDuration: duration.WithLabelValues(apiEcho, resultError).(observerWithExemplars),
		okRequests:  requests.WithLabelValues(apiEcho, resultOK),
		errRequests: requests.WithLabelValues(apiEcho, resultError),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "echo_requests_in_flight",
			Help: "Echo calls being handled right now.",
		}),
		exemplarInterval: exemplarInterval,
	}
}

// observe accounts for one finished call.
func (m *echoMetrics) observe(ctx context.Context, start time.Time, failed bool) {
	now := time.Now()
	seconds := now.Sub(start).Seconds()
	if failed {
		m.errDuration.ObserveWithExemplar(seconds, prometheus.Labels{exemplarRequestID: requestID(ctx)})
		m.errRequests.Inc()
		return
	}
	last := m.lastExemplar.Load()
	if now.UnixNano()-last >= int64(m.exemplarInterval) && m.lastExemplar.CompareAndSwap(last, now.UnixNano()) {
		m.okDuration.ObserveWithExemplar(seconds, prometheus.Labels{exemplarRequestID: requestID(ctx)})
	} else {
		m.okDuration.Observe(seconds)
	}
	m.okRequests.Inc()
}

// echoServer implements foo.Foo.
type echoServer struct {
	foopb.UnimplementedFooServer
	maxNameBytes int
	metrics      *echoMetrics
}

var _ foopb.FooServer = (*echoServer)(nil)

// Echo replies with the request's name, unchanged: EchoReply.message is
// EchoRequest.name. A name longer than the configured limit gets
// INVALID_ARGUMENT.
func (s *echoServer) Echo(ctx context.Context, req *foopb.EchoRequest) (reply *foopb.EchoReply, err error) {
	start := time.Now()
	s.metrics.inFlight.Inc()
	defer func() {
		s.metrics.inFlight.Dec()
		s.metrics.observe(ctx, start, err != nil)
	}()

	name := req.GetName()
	if len(name) > s.maxNameBytes {
		return nil, status.Errorf(codes.InvalidArgument, "name is %d bytes, longer than the limit of %d bytes", len(name), s.maxNameBytes)
	}
	return &foopb.EchoReply{Message: name}, nil
}

// exemplarRequestID is the exemplar label of the echo latency histogram.
const exemplarRequestID = "request_id"

// requestIDHeader is the gRPC metadata key of a caller-chosen request id.
const requestIDHeader = "x-request-id"

// maxRequestIDBytes bounds a caller's request id: exemplar labels may hold
// 128 runes in all, and request_id takes 10 of them.
const maxRequestIDBytes = 64

// requestID returns the call's x-request-id when it is a valid one, else a
// random 16-digit hex id.
func requestID(ctx context.Context) string {
	if ids := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(ids) > 0 && validRequestID(ids[0]) {
		return ids[0]
	}
	return strconv.FormatUint(rand.Uint64()|1<<63, 16)
}

// validRequestID reports whether id is 1 to maxRequestIDBytes printable ASCII
// characters without spaces.
func validRequestID(id string) bool {
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
