package main

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/grpc-metrics/proto/foopb"
	"example.com/grpc-metrics/services/internal/platform"
	"example.com/grpc-metrics/services/internal/platform/platformtest"
)

// FuzzEcho checks the handler on any name: it echoes names within the limit
// unchanged, rejects longer ones with INVALID_ARGUMENT naming the limit, and
// never panics. Seeds: the f.Add values and testdata/fuzz/FuzzEcho.
func FuzzEcho(f *testing.F) {
	for _, seed := range []string{"", "world", strings.Repeat("x", 16), strings.Repeat("x", 17), "é\x00\xff"} {
		f.Add(seed)
	}
	s := &echoServer{maxNameBytes: 16, metrics: newEchoMetrics(prometheus.NewRegistry())}
	f.Fuzz(func(t *testing.T, name string) {
		reply, err := s.Echo(t.Context(), &foopb.EchoRequest{Name: name})
		if len(name) > s.maxNameBytes {
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "limit of 16 bytes") {
				t.Fatalf("Echo(%d bytes) = %v, want INVALID_ARGUMENT naming the limit", len(name), err)
			}
			return
		}
		if err != nil || reply.GetMessage() != name {
			t.Fatalf("Echo(%q) = %q, %v; want the name back", name, reply.GetMessage(), err)
		}
	})
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
