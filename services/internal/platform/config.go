package platform

import (
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/kelseyhightower/envconfig"
)

// Config is a program's configuration: an envconfig struct that embeds
// Common and checks itself.
type Config interface {
	Validate() error
	Logging() LogConfig
	HandsOver() bool
}

// Common is the configuration every program has: its metrics and debug
// listeners, its logger and the hand-over of its sockets, read from
// PREFIX_METRICS_PORT, PREFIX_DEBUG_PORT, PREFIX_LOG_* and PREFIX_HANDOVER.
type Common struct {
	MetricsPort int       `envconfig:"METRICS_PORT" default:"9000" desc:"TCP port of the HTTP listener for /metrics, /healthz and /readyz"`
	DebugPort   DebugPort `envconfig:"DEBUG_PORT" desc:"TCP port of the debug listener (net/http/pprof), on loopback only; unset or empty: no debug listener"`
	Log         LogConfig `envconfig:"LOG"`
	Handover    bool      `envconfig:"HANDOVER" default:"false" desc:"keep the listening sockets in this process and serve from a child; on SIGHUP start the binary anew (a live update replaced it) on the same sockets and retire the old child once the new one serves"`
}

// Logging returns the logger settings.
func (c Common) Logging() LogConfig { return c.Log }

// HandsOver reports whether the program hands its sockets over on SIGHUP.
func (c Common) HandsOver() bool { return c.Handover }

// Check reports the first of the common settings that is out of range, or
// that takes a port of the program's own (keyed by variable name).
func (c Common) Check(prefix string, ports map[string]int) error {
	key := prefix + "_METRICS_PORT"
	if err := CheckPort(key, c.MetricsPort); err != nil {
		return err
	}
	for k, port := range ports {
		if port == c.MetricsPort && port != 0 {
			return &FieldError{Key: key, Value: c.MetricsPort, Reason: "the same port as " + k}
		}
	}
	taken := maps.Clone(ports)
	if taken == nil {
		taken = map[string]int{}
	}
	taken[key] = c.MetricsPort
	return c.DebugPort.Check(prefix+"_DEBUG_PORT", taken)
}

// ErrHelp is returned by LoadConfig when the arguments ask for the usage text.
var ErrHelp = errors.New("help requested")

// LoadConfig fills cfg from the environment variables named PREFIX_*, then
// validates it. The only arguments accepted are -h and --help, which print the
// variable table to usage and return ErrHelp.
func LoadConfig(prefix string, cfg Config, args []string, usage io.Writer) error {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			if err := PrintUsage(usage, prefix, cfg); err != nil {
				return err
			}
			return ErrHelp
		default:
			return fmt.Errorf("unexpected argument %q: configuration comes from %s_* environment variables (see --help)", a, prefix)
		}
	}
	if err := envconfig.Process(prefix, cfg); err != nil {
		var perr *envconfig.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("%s=%q: %s", perr.KeyName, perr.Value, parseReason(perr))
		}
		return err
	}
	return cfg.Validate()
}

// PrintUsage writes the table of environment variables cfg reads.
func PrintUsage(w io.Writer, prefix string, cfg Config) error {
	return envconfig.Usagef(prefix, cfg, w, usageFormat)
}

const usageFormat = `Configuration comes only from these environment variables:

{{range .}}{{if usage_description .}}  {{usage_key .}}
      {{usage_description .}} (type {{usage_type .}}, default {{with usage_default .}}{{.}}{{else}}""{{end}})
{{end}}{{end}}`

// parseReason turns an envconfig conversion error into a short sentence.
func parseReason(perr *envconfig.ParseError) string {
	switch perr.TypeName {
	case "time.Duration":
		return "not a duration (use a number with a unit, such as 500ms, 2s or 1m)"
	case "int", "int64", "uint16":
		return "not a whole number"
	case "float64":
		return "not a number"
	case "bool":
		return "not a boolean (use true or false)"
	}
	// Types with their own decoder (log level, log format) explain themselves.
	return perr.Err.Error()
}

// FieldError is an environment variable whose value parsed but is not allowed.
type FieldError struct {
	Key    string // environment variable, PREFIX_NAME
	Value  any
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s=%v: %s", e.Key, e.Value, e.Reason)
}

// CheckPort reports whether port is usable as a TCP listening port; 0 asks
// the system for a free one (the program logs the port it got).
func CheckPort(key string, port int) error {
	if port < 0 || port > 65535 {
		return &FieldError{Key: key, Value: port, Reason: "not a TCP port (0-65535, 0 for any free port)"}
	}
	return nil
}
