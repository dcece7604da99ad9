package main

import (
	"context"
	"math/rand/v2"
	"strconv"
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

// echoMetrics are the application metrics of the echo service.
type echoMetrics struct {
	duration *prometheus.HistogramVec // echo_request_duration_seconds{api,result}
	requests *prometheus.CounterVec   // echo_requests_total{api,result}
	inFlight prometheus.Gauge         // echo_requests_in_flight
}

func newEchoMetrics(reg prometheus.Registerer) *echoMetrics {
	f := promauto.With(reg)
	m := &echoMetrics{
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "echo_request_duration_seconds",
			Help: "Time spent handling echo calls, from the handler's start to its reply.",
			// Echo does no I/O: replies take microseconds, a slow one milliseconds.
			Buckets: prometheus.ExponentialBuckets(0.000_01, 4, 10), // 10µs .. ~2.6s
		}, []string{"api", "result"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "echo_requests_total",
			Help: "Echo calls handled, by result.",
		}, []string{"api", "result"}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "echo_requests_in_flight",
			Help: "Echo calls being handled right now.",
		}),
	}
	// Pre-initialise every series so rate() and the dashboards see zeros, not gaps.
	for _, r := range []string{resultOK, resultError} {
		m.duration.WithLabelValues(apiEcho, r)
		m.requests.WithLabelValues(apiEcho, r)
	}
	return m
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
		result := resultOK
		if err != nil {
			result = resultError
		}
		// The exemplar links a latency bucket to one call (served over OpenMetrics).
		s.metrics.duration.WithLabelValues(apiEcho, result).(prometheus.ExemplarObserver).ObserveWithExemplar(
			time.Since(start).Seconds(), prometheus.Labels{exemplarRequestID: requestID(ctx)})
		s.metrics.requests.WithLabelValues(apiEcho, result).Inc()
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
