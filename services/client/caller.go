package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
)

// Values of the result label of echo_client_calls_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// caller sends echo calls at a steady rate from a fixed number of workers.
type caller struct {
	client  foopb.FooClient
	cfg     Config
	log     *zap.Logger
	limiter *rate.Limiter
	calls   *prometheus.CounterVec // echo_client_calls_total{result}
}

func newCaller(client foopb.FooClient, cfg Config, log *zap.Logger, reg prometheus.Registerer) *caller {
	calls := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "echo_client_calls_total",
		Help: "Echo calls made by the client, by result.",
	}, []string{"result"})
	calls.WithLabelValues(resultOK)
	calls.WithLabelValues(resultError)
	return &caller{
		client: client,
		cfg:    cfg,
		log:    log,
		// A burst of one keeps the calls evenly spaced.
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), 1),
		calls:   calls,
	}
}

// run calls echo until ctx ends, then waits for the calls in flight.
func (c *caller) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for range c.cfg.Concurrency {
		g.Go(func() error {
			for {
				if err := c.limiter.Wait(ctx); err != nil {
					return nil // ctx ended
				}
				c.call(ctx)
			}
		})
	}
	return g.Wait()
}

// call makes one echo call, under a new request id, and accounts for its
// result. The id goes to the server as x-request-id and is logged with every
// failure (and every call at debug level), so a call's client and server log
// lines and its exemplars share it.
func (c *caller) call(ctx context.Context) {
	callCtx, id := platform.OutgoingRequestID(ctx)
	callCtx, cancel := context.WithTimeout(callCtx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	reply, err := c.client.Echo(callCtx, &foopb.EchoRequest{Name: c.cfg.Name})
	if err != nil {
		if ctx.Err() != nil {
			return // the caller is stopping; not a failure of the server
		}
		c.calls.WithLabelValues(resultError).Inc()
		st := status.Convert(err)
		c.log.Warn("echo failed", zap.String(platform.RequestIDKey, id), zap.Stringer("code", st.Code()),
			zap.String("message", st.Message()), zap.Duration("elapsed", time.Since(start)))
		return
	}
	c.calls.WithLabelValues(resultOK).Inc()
	if ce := c.log.Check(zapcore.DebugLevel, "echo"); ce != nil {
		ce.Write(zap.String(platform.RequestIDKey, id), zap.Int("reply_bytes", len(reply.GetMessage())), zap.Duration("elapsed", time.Since(start)))
	}
}
