package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"example.com/grpc-metrics/services/internal/platform"
)

func TestConfigDefaults(t *testing.T) {
	var got Config
	if err := platform.LoadConfig(envPrefix, &got, nil, nil); err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := Config{
		ServerAddr: "localhost:20000", Rate: 1, Concurrency: 1, Name: "world", Timeout: time.Second, MetricsPort: 9000,
		Log: platform.LogConfig{Level: platform.LogLevel(0), Format: platform.LogJSON},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "empty target", env: map[string]string{"CLIENT_SERVER_ADDR": ""}, wantErr: `CLIENT_SERVER_ADDR="": must not be empty`},
		{name: "negative rate", env: map[string]string{"CLIENT_RATE": "-1"}, wantErr: `CLIENT_RATE=-1: must be above 0 and at most 100000 calls per second`},
		{name: "zero rate", env: map[string]string{"CLIENT_RATE": "0"}, wantErr: `CLIENT_RATE=0: must be above 0 and at most 100000 calls per second`},
		{name: "NaN rate", env: map[string]string{"CLIENT_RATE": "NaN"}, wantErr: `CLIENT_RATE=NaN: must be above 0 and at most 100000 calls per second`},
		{name: "rate not a number", env: map[string]string{"CLIENT_RATE": "fast"}, wantErr: `CLIENT_RATE="fast": not a number`},
		{name: "zero concurrency", env: map[string]string{"CLIENT_CONCURRENCY": "0"}, wantErr: `CLIENT_CONCURRENCY=0: must be at least 1`},
		{name: "concurrency not a number", env: map[string]string{"CLIENT_CONCURRENCY": "1.5"}, wantErr: `CLIENT_CONCURRENCY="1.5": not a whole number`},
		{name: "timeout without unit", env: map[string]string{"CLIENT_TIMEOUT": "100"}, wantErr: `CLIENT_TIMEOUT="100": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{name: "negative timeout", env: map[string]string{"CLIENT_TIMEOUT": "-1s"}, wantErr: `CLIENT_TIMEOUT=-1s: must be positive`},
		{name: "negative duration", env: map[string]string{"CLIENT_DURATION": "-1m"}, wantErr: `CLIENT_DURATION=-1m0s: must not be negative`},
		{name: "port out of range", env: map[string]string{"CLIENT_METRICS_PORT": "65536"}, wantErr: `CLIENT_METRICS_PORT=65536: not a TCP port (0-65535, 0 for any free port)`},
		{name: "debug port not a number", env: map[string]string{"CLIENT_DEBUG_PORT": "on"}, wantErr: `CLIENT_DEBUG_PORT="on": not a whole number (a TCP port, or empty for no debug listener)`},
		{name: "debug port is the metrics port", env: map[string]string{"CLIENT_DEBUG_PORT": "9000"}, wantErr: `CLIENT_DEBUG_PORT=9000: the same port as CLIENT_METRICS_PORT`},
		{name: "unknown log level", env: map[string]string{"CLIENT_LOG_LEVEL": "verbose"}, wantErr: `CLIENT_LOG_LEVEL="verbose": unknown log level (use debug, info, warn or error)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var cfg Config
			err := platform.LoadConfig(envPrefix, &cfg, nil, nil)
			if err == nil {
				t.Fatalf("LoadConfig succeeded with %v, want error %q", tt.env, tt.wantErr)
			}
			if got := err.Error(); got != tt.wantErr {
				t.Errorf("LoadConfig error:\n got %s\nwant %s", got, tt.wantErr)
			}
		})
	}
}
