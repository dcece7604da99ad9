package main

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/services/internal/platform"
)

// callInterceptor comes first for each call. It counts the call in inFlight
// while it runs (the drain at shutdown waits for these calls, not for
// connections that carry none), and logs the calls worth a look, each with
// its trace and span ids (the server span's, which the stats handler started
// before any interceptor), method, code, duration and peer: a failure the
// server is responsible for at error, one the caller caused (a name over the
// limit) at info, and a success slower than slow at warn. Other calls cost
// one time.Since.
func callInterceptor(log *zap.Logger, slow time.Duration, inFlight *atomic.Int64) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		start := time.Now()
		resp, err := handler(ctx, req)
		elapsed := time.Since(start)
		code := status.Code(err)
		var ce *zapcore.CheckedEntry
		var event string
		switch {
		case code == codes.OK && elapsed < slow:
			return resp, err
		case code == codes.OK:
			ce, event = log.Check(zapcore.WarnLevel, "slow call"), "slow_call"
		case platform.ServerFault(code):
			ce, event = log.Check(zapcore.ErrorLevel, "call failed"), "call_failed"
		default:
			ce, event = log.Check(zapcore.InfoLevel, "call refused"), "call_refused"
		}
		if ce != nil {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
				addr = p.Addr.String()
			}
			fields := append(platform.TraceFields(ctx),
				zap.String("event", event),
				zap.String("method", info.FullMethod),
				zap.Stringer("code", code),
				zap.Duration("duration", elapsed),
				zap.String("peer", addr),
			)
			if err != nil {
				fields = append(fields, zap.String("error", status.Convert(err).Message()))
			}
			ce.Write(fields...)
		}
		return resp, err
	}
}
