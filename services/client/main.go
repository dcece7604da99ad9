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
	os.Exit(platform.ExitCode(run(os.Args[1:], os.Stdout, os.Stderr)))
}
