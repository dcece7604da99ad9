package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// TestConfig: each SERVER_* value (or argument) the server cannot use is
// refused with a message that names it and says what is wrong.
func TestConfig(t *testing.T) {
	const recvTooSmall = "must be at least 1027, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (1024) long"
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string // "" when accepted
	}{
		{},
		{args: []string{"-port=1"}, wantErr: `unexpected argument "-port=1": configuration comes from SERVER_* environment variables (see --help)`},
		{env: map[string]string{"SERVER_GRPC_PORT": "abc"}, wantErr: `SERVER_GRPC_PORT="abc": not a whole number`},
		{env: map[string]string{"SERVER_GRPC_PORT": "-1"}, wantErr: `SERVER_GRPC_PORT=-1: not a TCP port (0-65535, 0 for any free port)`},
		{env: map[string]string{"SERVER_METRICS_PORT": "20000"}, wantErr: `SERVER_METRICS_PORT=20000: the same port as SERVER_GRPC_PORT`},
		{env: map[string]string{"SERVER_DEBUG_PORT": "20000"}, wantErr: `SERVER_DEBUG_PORT=20000: the same port as SERVER_GRPC_PORT`},
		{env: map[string]string{"SERVER_REFLECTION": "maybe"}, wantErr: `SERVER_REFLECTION="maybe": not a boolean (use true or false)`},
		{env: map[string]string{"SERVER_MAX_NAME_BYTES": "0"}, wantErr: `SERVER_MAX_NAME_BYTES=0: must be at least 1`},
		{env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "100"}, wantErr: `SERVER_MAX_RECV_MSG_BYTES=100: ` + recvTooSmall},
		{env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "1026"}, wantErr: `SERVER_MAX_RECV_MSG_BYTES=1026: ` + recvTooSmall},
		{env: map[string]string{"SERVER_MAX_RECV_MSG_BYTES": "1027"}},
		{env: map[string]string{"SERVER_MAX_NAME_BYTES": "100", "SERVER_MAX_RECV_MSG_BYTES": "100"},
			wantErr: `SERVER_MAX_RECV_MSG_BYTES=100: must be at least 102, the wire size of a request whose name is SERVER_MAX_NAME_BYTES (100) long`},
		{env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "5"}, wantErr: `SERVER_SHUTDOWN_TIMEOUT="5": not a duration (use a number with a unit, such as 500ms, 2s or 1m)`},
		{env: map[string]string{"SERVER_SHUTDOWN_TIMEOUT": "0s"}, wantErr: `SERVER_SHUTDOWN_TIMEOUT=0s: must be positive`},
		{env: map[string]string{"SERVER_SLOW_CALL": "0s"}, wantErr: `SERVER_SLOW_CALL=0s: must be positive`},
		{env: map[string]string{"SERVER_MAX_CONNECTION_AGE": "100ms"}, wantErr: `SERVER_MAX_CONNECTION_AGE=100ms: must be at least 1s`},
		{env: map[string]string{"SERVER_MAX_CONNECTION_AGE": "1s"}},
		{env: map[string]string{"SERVER_SHUTDOWN_DELAY": "-1s"}, wantErr: `SERVER_SHUTDOWN_DELAY=-1s: must not be negative`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args, tt.env), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var cfg Config
			if err := platform.LoadConfig(envPrefix, &cfg, tt.args, nil); tt.wantErr == "" && err != nil || tt.wantErr != "" && fmt.Sprint(err) != tt.wantErr {
				t.Errorf("LoadConfig = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzConfig sets SERVER_* variables to any values: the configuration either
// loads and passes Validate, or fails with an error that names the variable.
// Seeds: the f.Add values and testdata/fuzz/FuzzConfig.
func FuzzConfig(f *testing.F) {
	f.Add("20000", "9000", "1024", "16384", "10s", "info")
	f.Add("0", "9000", "-1", "1", "5", "loud")
	f.Add("70000", "70000", "1e3", "0x10", "-1s", "")
	f.Add(" 1", "2 ", "9223372036854775808", "NaN", "1h1h", "DEBUG")
	f.Fuzz(func(t *testing.T, grpcPort, metricsPort, maxName, maxRecv, timeout, level string) {
		env := map[string]string{
			"SERVER_GRPC_PORT":          grpcPort,
			"SERVER_METRICS_PORT":       metricsPort,
			"SERVER_MAX_NAME_BYTES":     maxName,
			"SERVER_MAX_RECV_MSG_BYTES": maxRecv,
			"SERVER_SHUTDOWN_TIMEOUT":   timeout,
			"SERVER_LOG_LEVEL":          level,
		}
		for k, v := range env {
			if strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
				t.Skip("the environment cannot hold NUL bytes")
			}
			t.Setenv(k, v)
		}
		var cfg Config
		err := platform.LoadConfig(envPrefix, &cfg, nil, nil)
		if err == nil {
			// Accepted: the values are the ones given, not altered on the
			// way, and the server builds with them.
			for v, got := range map[string]int{grpcPort: cfg.GRPCPort, metricsPort: cfg.MetricsPort, maxName: cfg.MaxNameBytes, maxRecv: cfg.MaxRecvMsgBytes} {
				if want, perr := strconv.Atoi(v); perr != nil || want != got {
					t.Fatalf("accepted %q as %d", v, got)
				}
			}
			if cfg.GRPCPort < 0 || cfg.GRPCPort > 65535 || cfg.MetricsPort < 0 || cfg.MetricsPort > 65535 {
				t.Fatalf("accepted ports %d and %d", cfg.GRPCPort, cfg.MetricsPort)
			}
			tracing, _ := platformtest.Tracing(t, "server", zap.NewNop())
			newGRPCServer(cfg, zap.NewNop(), prometheus.NewRegistry(), tracing).Stop()
			return
		}
		named := false
		for k := range env {
			named = named || strings.HasPrefix(err.Error(), k+"=")
		}
		if !named {
			t.Fatalf("error %q does not start with the variable it is about", err)
		}
	})
}
