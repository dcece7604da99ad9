package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"example.com/grpc-metrics/services/internal/platform"
)

// TestConfig: each CLIENT_* value the client cannot use is refused with a
// message that names the variable and says what is wrong; the bounds
// themselves are accepted.
func TestConfig(t *testing.T) {
	tests := []struct {
		env     map[string]string
		wantErr string // "" when accepted
	}{
		{env: map[string]string{"CLIENT_SERVER_ADDR": ""}, wantErr: `CLIENT_SERVER_ADDR="": must not be empty`},
		{env: map[string]string{"CLIENT_RATE": "100000"}},
		{env: map[string]string{"CLIENT_RATE": "0.1"}},
		{env: map[string]string{"CLIENT_RATE": "100001"}, wantErr: `CLIENT_RATE=100001: must be above 0 and at most 100000 calls per second`},
		{env: map[string]string{"CLIENT_RATE": "-1"}, wantErr: `CLIENT_RATE=-1: must be above 0 and at most 100000 calls per second`},
		{env: map[string]string{"CLIENT_RATE": "0"}, wantErr: `CLIENT_RATE=0: must be above 0 and at most 100000 calls per second`},
		{env: map[string]string{"CLIENT_RATE": "NaN"}, wantErr: `CLIENT_RATE=NaN: must be above 0 and at most 100000 calls per second`},
		{env: map[string]string{"CLIENT_RATE": "fast"}, wantErr: `CLIENT_RATE="fast": not a number`},
		{env: map[string]string{"CLIENT_CONCURRENCY": "0"}, wantErr: `CLIENT_CONCURRENCY=0: must be at least 1`},
		{env: map[string]string{"CLIENT_CONCURRENCY": "1.5"}, wantErr: `CLIENT_CONCURRENCY="1.5": not a whole number`},
		{env: map[string]string{"CLIENT_TIMEOUT": "100"}, wantErr: `CLIENT_TIMEOUT="100": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{env: map[string]string{"CLIENT_TIMEOUT": "-1s"}, wantErr: `CLIENT_TIMEOUT=-1s: must be positive`},
		{env: map[string]string{"CLIENT_DURATION": "-1m"}, wantErr: `CLIENT_DURATION=-1m0s: must not be negative`},
		{env: map[string]string{"CLIENT_METRICS_PORT": "65536"}, wantErr: `CLIENT_METRICS_PORT=65536: not a TCP port (0-65535, 0 for any free port)`},
		{env: map[string]string{"CLIENT_DEBUG_PORT": "9000"}, wantErr: `CLIENT_DEBUG_PORT=9000: the same port as CLIENT_METRICS_PORT`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var cfg Config
			if err := platform.LoadConfig(envPrefix, &cfg, nil, nil); tt.wantErr == "" && err != nil || tt.wantErr != "" && fmt.Sprint(err) != tt.wantErr {
				t.Errorf("LoadConfig = %v, want %q", err, tt.wantErr)
			}
		})
	}
	var usage strings.Builder
	if err := platform.LoadConfig(envPrefix, &Config{}, []string{"-h"}, &usage); !errors.Is(err, platform.ErrHelp) || !strings.Contains(usage.String(), "  CLIENT_SERVER_ADDR\n") {
		t.Errorf("LoadConfig(-h) = %v, usage:\n%s\nwant ErrHelp and CLIENT_SERVER_ADDR listed", err, usage.String())
	}
}
