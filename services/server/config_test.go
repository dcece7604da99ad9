package main

import (
	"testing"

	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// TestConfigErrors: the server's own settings; those every program has are
// platform's (TestCommonConfigErrors).
func TestConfigErrors(t *testing.T) {
	platformtest.ConfigErrors(t, envPrefix, func() platform.Config { return &Config{} }, []platformtest.ConfigCase{
		{Name: "port not a number", Env: map[string]string{"SERVER_GRPC_PORT": "abc"}, WantErr: `SERVER_GRPC_PORT="abc": not a whole number`},
		{Name: "negative port", Env: map[string]string{"SERVER_GRPC_PORT": "-1"}, WantErr: `SERVER_GRPC_PORT=-1: not a TCP port (0-65535, 0 for any free port)`},
		{Name: "same ports", Env: map[string]string{"SERVER_METRICS_PORT": "20000"}, WantErr: `SERVER_METRICS_PORT=20000: the same port as SERVER_GRPC_PORT`},
		{Name: "reflection not a bool", Env: map[string]string{"SERVER_REFLECTION": "maybe"}, WantErr: `SERVER_REFLECTION="maybe": not a boolean (use true or false)`},
		{Name: "name limit zero", Env: map[string]string{"SERVER_MAX_NAME_BYTES": "0"}, WantErr: `SERVER_MAX_NAME_BYTES=0: must be at least 1`},
		{Name: "message limit below name limit", Env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "100"},
			WantErr: `SERVER_MAX_RECV_MSG_BYTES=100: must be at least 1027, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (1024) long`},
		// A name of 1024 bytes takes a 1-byte tag and a 2-byte length.
		{Name: "message limit one byte short", Env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "1026"},
			WantErr: `SERVER_MAX_RECV_MSG_BYTES=1026: must be at least 1027, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (1024) long`},
		{Name: "message limit equal to name limit", Env: map[string]string{"SERVER_MAX_NAME_BYTES": "100", "SERVER_MAX_RECV_MSG_BYTES": "100"},
			WantErr: `SERVER_MAX_RECV_MSG_BYTES=100: must be at least 102, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (100) long`},
		{Name: "duration without unit", Env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "5"}, WantErr: `SERVER_SHUTDOWN_TIMEOUT="5": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{Name: "zero slow-call threshold", Env: map[string]string{"SERVER_SLOW_CALL": "0s"}, WantErr: `SERVER_SLOW_CALL=0s: must be positive`},
		{Name: "zero timeout", Env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "0s"}, WantErr: `SERVER_SHUTDOWN_TIMEOUT=0s: must be positive`},
		{Name: "connection age too short", Env: map[string]string{"SERVER_MAX_CONNECTION_AGE": "100ms"}, WantErr: `SERVER_MAX_CONNECTION_AGE=100ms: must be at least 1s`},
		{Name: "negative delay", Env: map[string]string{"SERVER_SHUTDOWN_DELAY": "-1s"}, WantErr: `SERVER_SHUTDOWN_DELAY=-1s: must not be negative`},
		{Name: "debug port is the gRPC port", Env: map[string]string{"SERVER_DEBUG_PORT": "20000"}, WantErr: `SERVER_DEBUG_PORT=20000: the same port as SERVER_GRPC_PORT`},
	})
}
