package main

import (
	"fmt"
	"time"

	"example.com/grpc-metrics/services/internal/platform"
)

const envPrefix = "CLIENT"

// Config is the client's configuration, read from CLIENT_* variables.
type Config struct {
	ServerAddr  string        `envconfig:"SERVER_ADDR" default:"localhost:20000" desc:"gRPC target of the server: host:port, dns:///name:port, or kubernetes:///service.namespace:port (the ready pods of a Service's EndpointSlices, watched; the port may be the Service port's name); round_robin balances over every address"`
	Rate        float64       `envconfig:"RATE" default:"1" desc:"echo calls per second, over all workers"`
	Concurrency int           `envconfig:"CONCURRENCY" default:"1" desc:"calls in flight at most (workers)"`
	Timeout     time.Duration `envconfig:"TIMEOUT" default:"1s" desc:"deadline of each call, retries included"`
	Duration    time.Duration `envconfig:"DURATION" default:"0s" desc:"stop calling and exit after this long; 0 calls until SIGINT or SIGTERM"`
	Name        string        `envconfig:"NAME" default:"world" desc:"name sent in each echo request"`
	platform.Common
}

// maxRate bounds CLIENT_RATE: far above what one client can send, low enough
// to catch a typo.
const maxRate = 100_000

// Validate reports the first setting that is out of range.
func (c Config) Validate() error {
	if c.ServerAddr == "" {
		return &platform.FieldError{Key: envPrefix + "_SERVER_ADDR", Value: `""`, Reason: "must not be empty"}
	}
	if !(c.Rate > 0 && c.Rate <= maxRate) { // also rejects NaN
		return &platform.FieldError{Key: envPrefix + "_RATE", Value: c.Rate, Reason: fmt.Sprintf("must be above 0 and at most %d calls per second", maxRate)}
	}
	if c.Concurrency < 1 {
		return &platform.FieldError{Key: envPrefix + "_CONCURRENCY", Value: c.Concurrency, Reason: "must be at least 1"}
	}
	if c.Timeout <= 0 {
		return &platform.FieldError{Key: envPrefix + "_TIMEOUT", Value: c.Timeout, Reason: "must be positive"}
	}
	if c.Duration < 0 {
		return &platform.FieldError{Key: envPrefix + "_DURATION", Value: c.Duration, Reason: "must not be negative"}
	}
	return c.Common.Check(envPrefix)
}
