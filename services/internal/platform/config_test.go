package platform_test

import (
	"bytes"
	"cmp"
	"fmt"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap/zapcore"

	"example.com/grpc-metrics/services/internal/platform"
)

// testConfig is a program's configuration: a port of its own, and Common.
type testConfig struct {
	Port int `envconfig:"PORT" default:"1000" desc:"the program's own port"`
	platform.Common
}

func (c testConfig) Validate() error {
	return c.Common.Check("TEST", platform.NamedPort{Key: "TEST_PORT", Port: c.Port})
}

// TestCommonConfig: the settings every program has, read and checked; the
// programs' own are in their packages' config tests.
func TestCommonConfig(t *testing.T) {
	read := func(change func(*platform.Common)) platform.Common {
		c := platform.Common{MetricsPort: 9000, Log: platform.LogConfig{Level: platform.LogLevel(zapcore.InfoLevel), Format: platform.LogJSON}}
		change(&c)
		return c
	}
	tests := []struct {
		env     map[string]string
		want    platform.Common // the settings read, when there is no error
		wantErr string
	}{
		{env: map[string]string{"TEST_METRICS_PORT": "70000"}, wantErr: `TEST_METRICS_PORT=70000: not a TCP port (0-65535, 0 for any free port)`},
		{env: map[string]string{"TEST_METRICS_PORT": "1000"}, wantErr: `TEST_METRICS_PORT=1000: the same port as TEST_PORT`},
		{env: map[string]string{"TEST_METRICS_PORT": "0", "TEST_PORT": "0", "TEST_DEBUG_PORT": "0"}, want: read(func(c *platform.Common) { c.MetricsPort, c.DebugPort = 0, platform.DebugPort{On: true} })},
		{env: map[string]string{"TEST_DEBUG_PORT": ""}, want: read(func(*platform.Common) {})}, // off
		{env: map[string]string{"TEST_DEBUG_PORT": "6060"}, want: read(func(c *platform.Common) { c.DebugPort = platform.DebugPort{Port: 6060, On: true} })},
		{env: map[string]string{"TEST_DEBUG_PORT": "pprof"}, wantErr: `TEST_DEBUG_PORT="pprof": not a whole number (a TCP port, or empty for no debug listener)`},
		{env: map[string]string{"TEST_DEBUG_PORT": "60 60"}, wantErr: `TEST_DEBUG_PORT="60 60": not a whole number (a TCP port, or empty for no debug listener)`},
		{env: map[string]string{"TEST_DEBUG_PORT": "65536"}, wantErr: `TEST_DEBUG_PORT=65536: not a TCP port (0-65535, 0 for any free port)`},
		{env: map[string]string{"TEST_DEBUG_PORT": "-1"}, wantErr: `TEST_DEBUG_PORT=-1: not a TCP port (0-65535, 0 for any free port)`},
		{env: map[string]string{"TEST_DEBUG_PORT": "1000"}, wantErr: `TEST_DEBUG_PORT=1000: the same port as TEST_PORT`},
		{env: map[string]string{"TEST_DEBUG_PORT": "9000"}, wantErr: `TEST_DEBUG_PORT=9000: the same port as TEST_METRICS_PORT`},
		{env: map[string]string{"TEST_LOG_LEVEL": "WARN", "TEST_LOG_FORMAT": "console"}, want: read(func(c *platform.Common) {
			c.Log = platform.LogConfig{Level: platform.LogLevel(zapcore.WarnLevel), Format: platform.LogConsole}
		})},
		{env: map[string]string{"TEST_LOG_LEVEL": "debug"}, want: read(func(c *platform.Common) { c.Log.Level = platform.LogLevel(zapcore.DebugLevel) })},
		{env: map[string]string{"TEST_LOG_LEVEL": "error"}, want: read(func(c *platform.Common) { c.Log.Level = platform.LogLevel(zapcore.ErrorLevel) })},
		{env: map[string]string{"TEST_LOG_LEVEL": "loud"}, wantErr: `TEST_LOG_LEVEL="loud": unknown log level (use debug, info, warn or error)`},
		{env: map[string]string{"TEST_LOG_LEVEL": "fatal"}, wantErr: `TEST_LOG_LEVEL="fatal": unknown log level (use debug, info, warn or error)`},
		{env: map[string]string{"TEST_LOG_LEVEL": "panic"}, wantErr: `TEST_LOG_LEVEL="panic": unknown log level (use debug, info, warn or error)`},
		{env: map[string]string{"TEST_LOG_LEVEL": ""}, wantErr: `TEST_LOG_LEVEL="": unknown log level (use debug, info, warn or error)`},
		{env: map[string]string{"TEST_LOG_FORMAT": "xml"}, wantErr: `TEST_LOG_FORMAT="xml": unknown log format (use json or console)`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.env), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var cfg testConfig
			err := platform.LoadConfig("TEST", &cfg, nil, nil)
			if got := fmt.Sprint(err); tt.wantErr != "" && got != tt.wantErr || tt.wantErr == "" && err != nil {
				t.Fatalf("LoadConfig = %s, want %s", got, cmp.Or(tt.wantErr, "no error"))
			}
			if diff := gocmp.Diff(tt.want, cfg.Common); err == nil && diff != "" {
				t.Errorf("settings read (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStart: --help prints the variables to stdout and asks for exit code
// 0; a configuration that cannot be used, whether a variable, an argument
// or an OTEL_* variable, is one line on stderr that names it, and exit code
// 2.
func TestStart(t *testing.T) {
	tests := []struct {
		args       []string
		env        map[string]string
		wantStdout string // contained in stdout
		wantStderr string
		wantCode   int
	}{
		{args: []string{"-h"}, wantStdout: "  TEST_PORT\n      the program's own port (type Integer, default 1000)\n  TEST_METRICS_PORT\n"},
		{args: []string{"--help"}, wantStdout: "  TEST_DEBUG_PORT\n"},
		{args: []string{"-port=1"}, wantCode: 2,
			wantStderr: "test: invalid configuration: unexpected argument \"-port=1\": configuration comes from TEST_* environment variables (see --help)\n"},
		{env: map[string]string{"TEST_PORT": "abc"}, wantCode: 2, wantStderr: "test: invalid configuration: TEST_PORT=\"abc\": not a whole number\n"},
		{env: map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, wantCode: 2,
			wantStderr: "test: invalid configuration: OpenTelemetry configuration (OTEL_* variables): unsupported sampler: sometimes\n"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args, tt.env), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			_, _, err := platform.Start("test", "TEST", &testConfig{}, tt.args, &stdout, &stderr)
			if got := platform.ExitCode(err); got != tt.wantCode {
				t.Errorf("exit code %d (%v), want %d", got, err, tt.wantCode)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) || stderr.String() != tt.wantStderr {
				t.Errorf("stdout %q, stderr %q; want stdout with %q, stderr %q", stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// usageConfig has a field of every kind envconfig reads, beside Common.
type usageConfig struct {
	Port     int               `envconfig:"PORT" default:"1000" desc:"a port"`
	Wait     time.Duration     `envconfig:"WAIT" default:"1s" desc:"a duration"`
	Name     string            `desc:"a string named after its field, without a default"`
	Mode     usageMode         `envconfig:"MODE" default:"a" desc:"a named string"`
	Size     uint16            `envconfig:"SIZE" desc:"an unsigned number"`
	Ratio    float64           `envconfig:"RATIO" desc:"a number"`
	Peers    []string          `envconfig:"PEERS" desc:"a list"`
	Weights  map[string]int    `envconfig:"WEIGHTS" desc:"pairs"`
	Limit    *int              `envconfig:"LIMIT" desc:"a pointer"`
	Nested   usageNested       `envconfig:"NESTED"`
	Skipped  int               `envconfig:"SKIPPED" ignored:"true" desc:"ignored"`
	Quiet    bool              `envconfig:"QUIET"`
	internal int               // envconfig skips an unexported field
	Labels   map[string]string `envconfig:"LABELS" desc:"string pairs"`
	platform.Common
}

type usageMode string

type usageNested struct {
	Inner bool `envconfig:"INNER" default:"true" desc:"a nested bool"`
}

func (usageConfig) Validate() error { return nil }

// TestUsageIsEnvconfigs: --help's table is the one envconfig.Usagef prints
// with the same format, for every kind of field and for Common.
func TestUsageIsEnvconfigs(t *testing.T) {
	const format = `Configuration comes only from these environment variables:

{{range .}}{{if usage_description .}}  {{usage_key .}}
      {{usage_description .}} (type {{usage_type .}}, default {{with usage_default .}}{{.}}{{else}}""{{end}})
{{end}}{{end}}`
	for _, cfg := range []platform.Config{&usageConfig{}, &testConfig{}} {
		var got, want bytes.Buffer
		if err := platform.PrintUsage(&got, "TEST", cfg); err != nil {
			t.Fatalf("PrintUsage(%T): %v", cfg, err)
		}
		if err := envconfig.Usagef("TEST", cfg, &want, format); err != nil {
			t.Fatalf("envconfig.Usagef(%T): %v", cfg, err)
		}
		if got.String() != want.String() {
			t.Errorf("PrintUsage(%T):\n%s\nenvconfig.Usagef:\n%s", cfg, got.String(), want.String())
		}
	}
}
