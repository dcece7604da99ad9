// Command server serves the foo.Foo echo service over gRPC, with the gRPC
// health and reflection services, and Prometheus metrics on a separate HTTP
// listener. It is configured only through environment variables: SERVER_*
// (run it with --help for the list) and OpenTelemetry's OTEL_*.
package main

import (
	"os"

	"example.com/grpc-metrics/services/internal/platform"
)

func main() {
	os.Exit(platform.ExitCode(run(os.Args[1:], os.Stdout, os.Stderr)))
}
