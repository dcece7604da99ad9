package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// caller sends echo calls at a steady rate from a fixed number of workers.
type caller struct {
	client  foopb.FooClient
	cfg     Config
	log     *zap.Logger
	limiter *rate.Limiter
	tracer  trace.Tracer
	calls   *prometheus.CounterVec // echo_client_calls_total{result}
}

func newCaller(client foopb.FooClient, cfg Config, log *zap.Logger, reg prometheus.Registerer, tracer trace.Tracer) *caller {
	calls := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "echo_client_calls_total",
		Help: "Echo calls made by the client, by result.",
	}, []string{"result"})
	calls.WithLabelValues(platform.ResultOK)
	calls.WithLabelValues(platform.ResultError)
	return &caller{
		client: client,
		cfg:    cfg,
		log:    log,
		// A burst of one keeps the calls evenly spaced.
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), 1),
		calls:   calls,
		tracer:  tracer,
	}
}

// run calls echo until ctx ends, then waits for the calls in flight to
// finish within their deadline: a client that stops, or hands over to its
// next binary, abandons no call.
func (c *caller) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	calls := context.WithoutCancel(ctx)
	for range c.cfg.Concurrency {
		g.Go(func() error {
			for {
				if err := c.limiter.Wait(ctx); err != nil {
					return nil // ctx ended
				}
				c.call(calls)
			}
		})
	}
	return g.Wait()
}

// call makes one echo call and accounts for its result. The call is a span
// of its own, the root of its trace: the client span of each attempt
// (retries included) is its child, and the server's span theirs. Its trace
// id is in the client's exemplars and in the log line of a failure (and of
// every call at debug level), so both programs' lines of a call, its
// exemplars and its trace share one id.
func (c *caller) call(ctx context.Context) {
	ctx, span := c.tracer.Start(ctx, "call echo")
	defer span.End()
	callCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	reply, err := c.client.Echo(callCtx, &foopb.EchoRequest{Name: c.cfg.Name})
	if err != nil {
		c.calls.WithLabelValues(platform.ResultError).Inc()
		st := status.Convert(err)
		span.SetStatus(codes.Error, st.Message())
		c.log.Warn("echo failed", append(platform.TraceFields(ctx), zap.String("event", "echo_failed"), zap.Stringer("code", st.Code()),
			zap.String("message", st.Message()), zap.Duration("elapsed", time.Since(start)))...)
		return
	}
	c.calls.WithLabelValues(platform.ResultOK).Inc()
	if ce := c.log.Check(zapcore.DebugLevel, "echo"); ce != nil {
		ce.Write(append(platform.TraceFields(ctx), zap.Int("reply_bytes", len(reply.GetMessage())), zap.Duration("elapsed", time.Since(start)))...)
	}
}
