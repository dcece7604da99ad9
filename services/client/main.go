// Command client calls foo.Foo/echo continuously, at a configured rate and
// concurrency, and exports Prometheus metrics about its calls. It is
// configured only through environment variables: CLIENT_* (run it with
// --help for the list) and OpenTelemetry's OTEL_*.
package main

import (
	"os"

	"example.com/grpc-metrics/services/internal/platform"
)

func main() {
	ctx, stop := platform.SignalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(platform.ExitCode(err))
}
