package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors and PROGRAM_build_info (version, revision, Go version, set at
// link time through github.com/prometheus/common/version).
func NewRegistry(program string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector(program),
	)
	return reg
}

// MetricsServer serves /metrics, /healthz and /readyz on its own listener.
type MetricsServer struct {
	log   *zap.Logger
	srv   *http.Server
	ready atomic.Bool
}

// Tuning of the metrics listener.
const (
	readHeaderTimeout      = 5 * time.Second  // a scrape sends a few hundred bytes of headers
	writeTimeout           = 30 * time.Second // longer than any Prometheus scrape timeout
	idleTimeout            = 2 * time.Minute  // Prometheus keeps its connection between 5s scrapes
	metricsShutdownTimeout = 5 * time.Second  // a scrape in progress at exit may finish
)

// Values of the result label of the echo metrics of both programs.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// ExemplarInterval spaces the latency exemplars of successful calls in both
// programs (see ExemplarSampler).
const ExemplarInterval = 100 * time.Millisecond

// HandlingTime is the histogram of go-grpc-middleware's gRPC metrics on both
// sides: from a fast local echo to a call stuck behind a slow peer, native
// as well as classic.
var HandlingTime = []grpcprom.HistogramOption{
	grpcprom.WithHistogramBuckets([]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
	NativeHistogram,
}

// NewMetricsServer builds the HTTP server for reg. /readyz answers 503 until
// SetReady(true); /healthz answers 200 while the process runs.
func NewMetricsServer(log *zap.Logger, reg *prometheus.Registry) *MetricsServer {
	m := &MetricsServer{log: log}
	mux := http.NewServeMux()
	// promhttp_metric_handler_* describe the scrapes themselves.
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          zap.NewStdLog(log.Named("promhttp")),
		Registry:          reg,
		EnableOpenMetrics: true, // exemplars are served only over OpenMetrics
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	return m
}

// SetReady sets what /readyz answers.
func (m *MetricsServer) SetReady(ready bool) { m.ready.Store(ready) }

// Serve serves on lis until Shutdown; it returns nil after a shutdown.
func (m *MetricsServer) Serve(lis net.Listener) error { return serveHTTP(m.srv, lis, "metrics") }

// Actor serves on lis; its stop lets a scrape in progress finish. /readyz
// turns 503 then, unless ctx, the program's, ended by a hand-over: the pod
// stays ready.
func (m *MetricsServer) Actor(ctx context.Context, lis net.Listener) Actor {
	return Actor{
		Run: func() error { return m.Serve(lis) },
		Stop: func(error) {
			if HandedOver(ctx) {
				retireHTTP(m.srv, lis, metricsShutdownTimeout)
			} else {
				m.SetReady(false)
			}
			ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
			defer cancel()
			if err := m.Shutdown(ctx); err != nil {
				m.log.Warn("metrics listener", zap.Error(err))
			}
		},
	}
}

// serveHTTP serves srv on lis until it is shut down or closed, which is no
// error; what names the listener in any other.
func serveHTTP(srv *http.Server, lis net.Listener, what string) error {
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serve %s: %w", what, err)
	}
	return nil
}

// retireHTTP stops srv accepting on lis, a worker's listener (see
// StopAccepting), and waits up to timeout for the connections it has to
// close, each after its request in progress is answered; it then leaves
// srv to be shut down.
func retireHTTP(srv *http.Server, lis net.Listener, timeout time.Duration) {
	StopAccepting(lis)
	srv.SetKeepAlivesEnabled(false)
	AwaitClosed(lis, time.Now().Add(timeout))
}

// Shutdown stops the listener and waits for requests in progress until ctx ends.
func (m *MetricsServer) Shutdown(ctx context.Context) error {
	if err := m.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down metrics server: %w", err)
	}
	return nil
}
