// Command client calls foo.Foo/echo continuously, at a configured rate and
// concurrency, and exports Prometheus metrics about its calls. It is
// configured only through CLIENT_* environment variables (run it with --help
// for the list).
package main

import (
	"os"

	"example.com/grpc-metrics/services/internal/platform"
)

func main() {
	os.Exit(platform.Main("client", envPrefix, os.Args[1:], os.Stdout, os.Stderr, run))
}
