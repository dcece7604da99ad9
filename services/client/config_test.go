package main

import (
	"testing"

	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// TestConfigErrors: the client's own settings; those every program has are
// platform's (TestCommonConfigErrors).
func TestConfigErrors(t *testing.T) {
	platformtest.ConfigErrors(t, envPrefix, func() platform.Config { return &Config{} }, []platformtest.ConfigCase{
		{Name: "empty target", Env: map[string]string{"CLIENT_SERVER_ADDR": ""}, WantErr: `CLIENT_SERVER_ADDR="": must not be empty`},
		{Name: "negative rate", Env: map[string]string{"CLIENT_RATE": "-1"}, WantErr: `CLIENT_RATE=-1: must be above 0 and at most 100000 calls per second`},
		{Name: "zero rate", Env: map[string]string{"CLIENT_RATE": "0"}, WantErr: `CLIENT_RATE=0: must be above 0 and at most 100000 calls per second`},
		{Name: "NaN rate", Env: map[string]string{"CLIENT_RATE": "NaN"}, WantErr: `CLIENT_RATE=NaN: must be above 0 and at most 100000 calls per second`},
		{Name: "rate not a number", Env: map[string]string{"CLIENT_RATE": "fast"}, WantErr: `CLIENT_RATE="fast": not a number`},
		{Name: "zero concurrency", Env: map[string]string{"CLIENT_CONCURRENCY": "0"}, WantErr: `CLIENT_CONCURRENCY=0: must be at least 1`},
		{Name: "concurrency not a number", Env: map[string]string{"CLIENT_CONCURRENCY": "1.5"}, WantErr: `CLIENT_CONCURRENCY="1.5": not a whole number`},
		{Name: "timeout without unit", Env: map[string]string{"CLIENT_TIMEOUT": "100"}, WantErr: `CLIENT_TIMEOUT="100": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{Name: "negative timeout", Env: map[string]string{"CLIENT_TIMEOUT": "-1s"}, WantErr: `CLIENT_TIMEOUT=-1s: must be positive`},
		{Name: "negative duration", Env: map[string]string{"CLIENT_DURATION": "-1m"}, WantErr: `CLIENT_DURATION=-1m0s: must not be negative`},
	})
}
