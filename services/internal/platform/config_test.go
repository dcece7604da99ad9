package platform_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"example.com/grpc-metrics/services/internal/platform"
)

// testConfig is a program's configuration: a port of its own, and Common.
type testConfig struct {
	Port int `envconfig:"PORT" default:"1000" desc:"the program's own port"`
	platform.Common
}

func (c testConfig) Validate() error {
	return c.Common.Check("TEST", map[string]int{"TEST_PORT": c.Port})
}

// TestCommonConfigErrors: the settings every program has. The programs' own
// are checked on the real binaries (infra/programs, TestExitCodes).
func TestCommonConfigErrors(t *testing.T) {
	tests := []struct {
		Name    string
		Env     map[string]string
		WantErr string
	}{
		{Name: "metrics port too large", Env: map[string]string{"TEST_METRICS_PORT": "70000"}, WantErr: `TEST_METRICS_PORT=70000: not a TCP port (0-65535, 0 for any free port)`},
		{Name: "metrics port is the program's", Env: map[string]string{"TEST_METRICS_PORT": "1000"}, WantErr: `TEST_METRICS_PORT=1000: the same port as TEST_PORT`},
		{Name: "debug port not a number", Env: map[string]string{"TEST_DEBUG_PORT": "pprof"}, WantErr: `TEST_DEBUG_PORT="pprof": not a whole number (a TCP port, or empty for no debug listener)`},
		{Name: "debug port out of range", Env: map[string]string{"TEST_DEBUG_PORT": "65536"}, WantErr: `TEST_DEBUG_PORT=65536: not a TCP port (0-65535, 0 for any free port)`},
		{Name: "debug port is the program's", Env: map[string]string{"TEST_DEBUG_PORT": "1000"}, WantErr: `TEST_DEBUG_PORT=1000: the same port as TEST_PORT`},
		{Name: "debug port is the metrics port", Env: map[string]string{"TEST_DEBUG_PORT": "9000"}, WantErr: `TEST_DEBUG_PORT=9000: the same port as TEST_METRICS_PORT`},
		{Name: "unknown log level", Env: map[string]string{"TEST_LOG_LEVEL": "loud"}, WantErr: `TEST_LOG_LEVEL="loud": unknown log level (use debug, info, warn or error)`},
		{Name: "fatal is not a level", Env: map[string]string{"TEST_LOG_LEVEL": "fatal"}, WantErr: `TEST_LOG_LEVEL="fatal": unknown log level (use debug, info, warn or error)`},
		{Name: "unknown log format", Env: map[string]string{"TEST_LOG_FORMAT": "xml"}, WantErr: `TEST_LOG_FORMAT="xml": unknown log format (use json or console)`},
	}
	for _, tt := range tests {
		t.Run(tt.Name, func(t *testing.T) {
			for k, v := range tt.Env {
				t.Setenv(k, v)
			}
			err := platform.LoadConfig("TEST", &testConfig{}, nil, nil)
			if err == nil || err.Error() != tt.WantErr {
				t.Errorf("LoadConfig with %v = %v, want %s", tt.Env, err, tt.WantErr)
			}
		})
	}
}

// TestConfigArguments: --help prints every variable, with its description,
// and asks for no start; any other argument is an error.
func TestConfigArguments(t *testing.T) {
	var out bytes.Buffer
	var cfg testConfig
	if err := platform.LoadConfig("TEST", &cfg, []string{"--help"}, &out); !errors.Is(err, platform.ErrHelp) {
		t.Fatalf("LoadConfig(--help) = %v, want ErrHelp", err)
	}
	for _, want := range []string{"TEST_PORT\n      the program's own port", "TEST_METRICS_PORT\n", "TEST_DEBUG_PORT\n", "TEST_LOG_LEVEL\n", "TEST_LOG_FORMAT\n"} {
		if !strings.Contains(out.String(), "  "+want) {
			t.Errorf("--help output lacks %q:\n%s", want, out.String())
		}
	}
	err := platform.LoadConfig("TEST", &cfg, []string{"--port=1"}, &out)
	if err == nil || !strings.Contains(err.Error(), `unexpected argument "--port=1"`) {
		t.Errorf("LoadConfig(--port=1) = %v, want an unexpected argument error", err)
	}
	if got := platform.ExitCode(&platform.ConfigError{Err: err}); got != 2 {
		t.Errorf("exit code of a configuration error = %d, want 2", got)
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
	Hosts    []string          `envconfig:"HOSTS" desc:"a list"`
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
