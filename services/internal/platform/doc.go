// Package platform holds what the server and the client share: Main, the
// whole of each program's main (configuration from PREFIX_* environment
// variables, the zap logger, grpc-go's logs routed through it, the signal
// handling); the Prometheus registry with the standard collectors and the
// HTTP listener for /metrics and the health endpoints; the optional
// loopback-only pprof listener (DebugPort); request ids, set when a call
// starts and read wherever it is logged or sampled as an exemplar
// (OutgoingRequestID, IncomingRequestID, RequestID, ExemplarSampler); and
// the status codes the server is responsible for (ServerFault).
package platform
