package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// apiEcho is the api label of the echo metrics: the RPC, as in the original
// example. Their result label is platform.ResultOK or platform.ResultError.
const apiEcho = "echo"

// echoMetrics are the application metrics of the echo service: the series of
// echo_request_duration_seconds{api,result} and echo_requests_total{api,result}
// for each result, looked up once, and echo_requests_in_flight.
type echoMetrics struct {
	okDuration, errDuration prometheus.ExemplarObserver // a histogram series
	okRequests, errRequests prometheus.Counter
	inFlight                prometheus.Gauge
	exemplars               *platform.ExemplarSampler
}

func newEchoMetrics(reg prometheus.Registerer) *echoMetrics {
	f := promauto.With(reg)
	opts := prometheus.HistogramOpts{
		Name: "echo_request_duration_seconds",
		Help: "Time spent handling echo calls, from the handler's start to its reply.",
		// Echo does no I/O: replies take microseconds, a slow one milliseconds.
		Buckets: prometheus.ExponentialBuckets(0.000_01, 4, 10), // 10µs .. ~2.6s
	}
	platform.NativeHistogram(&opts)
	duration := f.NewHistogramVec(opts, []string{"api", "result"})
	requests := f.NewCounterVec(prometheus.CounterOpts{
		Name: "echo_requests_total",
		Help: "Echo calls handled, by result.",
	}, []string{"api", "result"})
	// Every series exists from the start, so rate() and the dashboards see
	// zeros, not gaps.
	return &echoMetrics{
		okDuration:  duration.WithLabelValues(apiEcho, platform.ResultOK).(prometheus.ExemplarObserver),
		errDuration: duration.WithLabelValues(apiEcho, platform.ResultError).(prometheus.ExemplarObserver),
		okRequests:  requests.WithLabelValues(apiEcho, platform.ResultOK),
		errRequests: requests.WithLabelValues(apiEcho, platform.ResultError),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "echo_requests_in_flight",
			Help: "Echo calls being handled right now.",
		}),
		exemplars: platform.NewExemplarSampler(platform.ExemplarInterval),
	}
}

// observe accounts for one finished call. The exemplar's trace id is the
// call's, so it leads to the call's trace and log lines. Every failure
// carries one; successes as the sampler allows (ExemplarInterval). Without
// one (nil labels) the histogram observes and keeps its last exemplar.
func (m *echoMetrics) observe(ctx context.Context, start time.Time, failed bool) {
	seconds := time.Since(start).Seconds()
	if failed {
		m.errDuration.ObserveWithExemplar(seconds, platform.TraceExemplar(ctx))
		m.errRequests.Inc()
		return
	}
	m.okDuration.ObserveWithExemplar(seconds, m.exemplars.Exemplar(ctx))
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
