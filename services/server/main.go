// Command server serves the foo.Foo echo service over gRPC, with the gRPC
// health and reflection services, and Prometheus metrics on a separate HTTP
// listener. It is configured only through SERVER_* environment variables
// (run it with --help for the list).
package main

import (
	"os"

	"example.com/grpc-metrics/services/internal/platform"
)

func main() {
	os.Exit(platform.Main("server", envPrefix, os.Args[1:], os.Stdout, os.Stderr, run))
}
