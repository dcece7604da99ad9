// Package platform holds what the server and the client share: their start
// and stop (Start, Program.Stop: the configuration from PREFIX_* environment
// variables with its Common part, the zap logger with grpc-go's logs routed
// through it, the signals); their lifecycle (Serve, which runs each
// listener's serve and stop as one group, and Listeners); tracing with the
// OpenTelemetry SDK (Tracing, TraceFields, the trace-id exemplars of
// ExemplarSampler); the Prometheus registry and the HTTP listener for
// /metrics and the health endpoints; the optional loopback-only pprof
// listener (DebugPort); the constants of both programs' metrics; and the
// status codes the server is responsible for (ServerFault).
package platform
