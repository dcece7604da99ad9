package main

import (
	"bytes"
	"errors"
	"strings"
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
		GRPCPort: 20000, MetricsPort: 9000, Reflection: true, MaxNameBytes: 1024, MaxRecvMsgBytes: 16384,
		MaxConnAge: time.Minute, ShutdownDelay: 0, ShutdownTimeout: 10 * time.Second, SlowCall: 100 * time.Millisecond,
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
		{name: "port not a number", env: map[string]string{"SERVER_GRPC_PORT": "abc"}, wantErr: `SERVER_GRPC_PORT="abc": not a whole number`},
		{name: "negative port", env: map[string]string{"SERVER_GRPC_PORT": "-1"}, wantErr: `SERVER_GRPC_PORT=-1: not a TCP port (0-65535, 0 for any free port)`},
		{name: "port too large", env: map[string]string{"SERVER_METRICS_PORT": "70000"}, wantErr: `SERVER_METRICS_PORT=70000: not a TCP port (0-65535, 0 for any free port)`},
		{name: "same ports", env: map[string]string{"SERVER_METRICS_PORT": "20000"}, wantErr: `SERVER_METRICS_PORT=20000: the same port as SERVER_GRPC_PORT`},
		{name: "reflection not a bool", env: map[string]string{"SERVER_REFLECTION": "maybe"}, wantErr: `SERVER_REFLECTION="maybe": not a boolean (use true or false)`},
		{name: "name limit zero", env: map[string]string{"SERVER_MAX_NAME_BYTES": "0"}, wantErr: `SERVER_MAX_NAME_BYTES=0: must be at least 1`},
		{name: "message limit below name limit", env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "100"},
			wantErr: `SERVER_MAX_RECV_MSG_BYTES=100: must be at least 1027, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (1024) long`},
		// A name of 1024 bytes takes a 1-byte tag and a 2-byte length.
		{name: "message limit one byte short", env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "1026"},
			wantErr: `SERVER_MAX_RECV_MSG_BYTES=1026: must be at least 1027, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (1024) long`},
		{name: "message limit equal to name limit", env: map[string]string{"SERVER_MAX_NAME_BYTES": "100", "SERVER_MAX_RECV_MSG_BYTES": "100"},
			wantErr: `SERVER_MAX_RECV_MSG_BYTES=100: must be at least 102, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (100) long`},
		{name: "duration without unit", env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "5"}, wantErr: `SERVER_SHUTDOWN_TIMEOUT="5": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{name: "zero slow-call threshold", env: map[string]string{"SERVER_SLOW_CALL": "0s"}, wantErr: `SERVER_SLOW_CALL=0s: must be positive`},
		{name: "zero timeout", env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "0s"}, wantErr: `SERVER_SHUTDOWN_TIMEOUT=0s: must be positive`},
		{name: "connection age too short", env: map[string]string{"SERVER_MAX_CONNECTION_AGE": "100ms"}, wantErr: `SERVER_MAX_CONNECTION_AGE=100ms: must be at least 1s`},
		{name: "negative delay", env: map[string]string{"SERVER_SHUTDOWN_DELAY": "-1s"}, wantErr: `SERVER_SHUTDOWN_DELAY=-1s: must not be negative`},
		{name: "unknown log level", env: map[string]string{"SERVER_LOG_LEVEL": "loud"}, wantErr: `SERVER_LOG_LEVEL="loud": unknown log level (use debug, info, warn or error)`},
		{name: "fatal is not a level", env: map[string]string{"SERVER_LOG_LEVEL": "fatal"}, wantErr: `SERVER_LOG_LEVEL="fatal": unknown log level (use debug, info, warn or error)`},
		{name: "unknown log format", env: map[string]string{"SERVER_LOG_FORMAT": "xml"}, wantErr: `SERVER_LOG_FORMAT="xml": unknown log format (use json or console)`},
		{name: "debug port not a number", env: map[string]string{"SERVER_DEBUG_PORT": "pprof"}, wantErr: `SERVER_DEBUG_PORT="pprof": not a whole number (a TCP port, or empty for no debug listener)`},
		{name: "debug port out of range", env: map[string]string{"SERVER_DEBUG_PORT": "65536"}, wantErr: `SERVER_DEBUG_PORT=65536: not a TCP port (0-65535, 0 for any free port)`},
		{name: "debug port is the gRPC port", env: map[string]string{"SERVER_DEBUG_PORT": "20000"}, wantErr: `SERVER_DEBUG_PORT=20000: the same port as SERVER_GRPC_PORT`},
		{name: "debug port is the metrics port", env: map[string]string{"SERVER_DEBUG_PORT": "9000"}, wantErr: `SERVER_DEBUG_PORT=9000: the same port as SERVER_METRICS_PORT`},
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

func TestConfigHelp(t *testing.T) {
	var out bytes.Buffer
	var cfg Config
	err := platform.LoadConfig(envPrefix, &cfg, []string{"--help"}, &out)
	if !errors.Is(err, platform.ErrHelp) {
		t.Fatalf("LoadConfig(--help) = %v, want ErrHelp", err)
	}
	for _, key := range []string{"SERVER_GRPC_PORT", "SERVER_METRICS_PORT", "SERVER_REFLECTION", "SERVER_MAX_NAME_BYTES",
		"SERVER_MAX_RECV_MSG_BYTES", "SERVER_MAX_CONNECTION_AGE", "SERVER_SHUTDOWN_DELAY", "SERVER_SHUTDOWN_TIMEOUT", "SERVER_SLOW_CALL", "SERVER_DEBUG_PORT", "SERVER_LOG_LEVEL", "SERVER_LOG_FORMAT"} {
		if !strings.Contains(out.String(), "  "+key+"\n") {
			t.Errorf("--help output lacks %s:\n%s", key, out.String())
		}
	}
	if err := platform.LoadConfig(envPrefix, &cfg, []string{"--port=1"}, &out); err == nil || !strings.Contains(err.Error(), `unexpected argument "--port=1"`) {
		t.Errorf("LoadConfig(--port=1) = %v, want an unexpected argument error", err)
	}
}
