// Package platform holds what the server and the client share: loading a
// Config from environment variables, the zap logger, the Prometheus registry
// with the standard collectors, and the HTTP listener that serves /metrics
// and the health endpoints.
package platform
