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
// connections that carry none). It gives the call its request id: the
// caller's x-request-id when valid (read where it is needed), else a new one
// in the context. The exemplars and the log lines of the call carry it. Then
// it logs the calls worth a look, each with its request id, method, code,
// duration and peer: a failure the server is responsible for at error, one
// the caller caused (a name over the limit) at info, and a success slower
// than slow at warn. Other calls cost one time.Since.
func callInterceptor(log *zap.Logger, slow time.Duration, inFlight *atomic.Int64) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		ctx = platform.IncomingRequestID(ctx)
		start := time.Now()
		resp, err := handler(ctx, req)
		elapsed := time.Since(start)
		code := status.Code(err)
		var ce *zapcore.CheckedEntry
		switch {
		case code == codes.OK && elapsed < slow:
			return resp, err
		case code == codes.OK:
			ce = log.Check(zapcore.WarnLevel, "slow call")
		case platform.ServerFault(code):
			ce = log.Check(zapcore.ErrorLevel, "call failed")
		default:
			ce = log.Check(zapcore.InfoLevel, "call refused")
		}
		if ce != nil {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
				addr = p.Addr.String()
			}
			fields := []zap.Field{
				zap.String(platform.RequestIDKey, platform.RequestID(ctx)),
				zap.String("method", info.FullMethod),
				zap.Stringer("code", code),
				zap.Duration("duration", elapsed),
				zap.String("peer", addr),
			}
			if err != nil {
				fields = append(fields, zap.String("error", status.Convert(err).Message()))
			}
			ce.Write(fields...)
		}
		return resp, err
	}
}
