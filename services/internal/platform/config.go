package platform

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// Config is a program's configuration: an envconfig struct that embeds
// Common and checks itself.
type Config interface {
	Validate() error
	Logging() LogConfig
	Hosts() []string
}

// Common is the configuration every program has: its metrics and debug
// listeners, the addresses it listens on and its logger, read from
// PREFIX_METRICS_PORT, PREFIX_DEBUG_PORT, PREFIX_LISTEN_HOSTS and
// PREFIX_LOG_*.
type Common struct {
	MetricsPort int       `envconfig:"METRICS_PORT" default:"9000" desc:"TCP port of the HTTP listener for /metrics, /healthz and /readyz"`
	ListenHosts []string  `envconfig:"LISTEN_HOSTS" desc:"IP addresses the program's listeners (not the debug one) listen on, comma-separated, such as 127.0.0.1,10.244.0.1; empty: every interface"`
	DebugPort   DebugPort `envconfig:"DEBUG_PORT" desc:"TCP port of the debug listener (net/http/pprof), on loopback only; unset or empty: no debug listener"`
	Log         LogConfig `envconfig:"LOG"`
}

// Logging returns the logger settings.
func (c Common) Logging() LogConfig { return c.Log }

// Hosts returns the addresses to listen on, none for every interface.
func (c Common) Hosts() []string { return c.ListenHosts }

// NamedPort is a TCP port setting and the variable it comes from.
type NamedPort struct {
	Key  string // PREFIX_NAME
	Port int
}

// Check reports the first port that is out of range or the same as one
// before it, in the order: the program's own ports, PREFIX_METRICS_PORT,
// then PREFIX_DEBUG_PORT when it is on. Port 0, any free one, may repeat.
func (c Common) Check(prefix string, own ...NamedPort) error {
	for i, h := range c.ListenHosts {
		if net.ParseIP(h) == nil {
			return &FieldError{Key: prefix + "_LISTEN_HOSTS", Value: strings.Join(c.ListenHosts, ","), Reason: fmt.Sprintf("%q is not an IP address", h)}
		}
		for _, before := range c.ListenHosts[:i] {
			if net.ParseIP(before).Equal(net.ParseIP(h)) {
				return &FieldError{Key: prefix + "_LISTEN_HOSTS", Value: strings.Join(c.ListenHosts, ","), Reason: fmt.Sprintf("%s is there twice", h)}
			}
		}
	}
	ports := append(own[:len(own):len(own)], NamedPort{Key: prefix + "_METRICS_PORT", Port: c.MetricsPort})
	if c.DebugPort.On {
		ports = append(ports, NamedPort{Key: prefix + "_DEBUG_PORT", Port: c.DebugPort.Port})
	}
	for i, p := range ports {
		if p.Port < 0 || p.Port > 65535 {
			return &FieldError{Key: p.Key, Value: p.Port, Reason: "not a TCP port (0-65535, 0 for any free port)"}
		}
		for _, before := range ports[:i] {
			if p.Port == before.Port && p.Port != 0 {
				return &FieldError{Key: p.Key, Value: p.Port, Reason: "the same port as " + before.Key}
			}
		}
	}
	return nil
}

// DebugPort is the TCP port of a program's debug listener, which serves
// net/http/pprof. Unlike the other ports it may be left unset: the listener
// is off unless its variable names a port (0 for any free one).
type DebugPort struct {
	Port int
	On   bool
}

// Decode reads the variable's value: a port, or nothing for no listener.
func (p *DebugPort) Decode(v string) error {
	if v == "" {
		*p = DebugPort{}
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not a whole number (a TCP port, or empty for no debug listener)")
	}
	*p = DebugPort{Port: n, On: true}
	return nil
}

// String is the port, or "off".
func (p DebugPort) String() string {
	if !p.On {
		return "off"
	}
	return strconv.Itoa(p.Port)
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
//
// The table is what envconfig.Usagef would print with usageFormat (a test
// holds the two together), written here without text/template: a template's
// calls of methods by name, reachable from the binary, make the linker keep
// every exported method of every type it links, 2.9 MB of the server's
// 17 MB, and each live update copies that into the container.
func PrintUsage(w io.Writer, prefix string, cfg Config) error {
	t := reflect.TypeOf(cfg)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return envconfig.ErrInvalidSpecification
	}
	var b strings.Builder
	b.WriteString("Configuration comes only from these environment variables:\n\n")
	writeUsage(&b, prefix, t.Elem())
	_, err := io.WriteString(w, b.String())
	return err
}

// writeUsage writes the variables of struct t with a description, named as
// envconfig names them: the field's envconfig tag (or its name) after
// prefix_, a nested struct's fields after its own key, an embedded struct's
// after prefix.
func writeUsage(b *strings.Builder, prefix string, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("ignored") == "true" {
			continue
		}
		key := f.Name
		if alt := f.Tag.Get("envconfig"); alt != "" {
			key = alt
		}
		if prefix != "" {
			key = prefix + "_" + key
		}
		key = strings.ToUpper(key)
		if f.Type.Kind() == reflect.Struct && !decodes(f.Type) {
			inner := key
			if f.Anonymous {
				inner = prefix
			}
			writeUsage(b, inner, f.Type)
			continue
		}
		desc := f.Tag.Get("desc")
		if desc == "" {
			continue
		}
		def := f.Tag.Get("default")
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(b, "  %s\n      %s (type %s, default %s)\n", key, desc, typeDescription(f.Type), def)
	}
}

var decoderTypes = []reflect.Type{
	reflect.TypeFor[envconfig.Decoder](),
	reflect.TypeFor[envconfig.Setter](),
	reflect.TypeFor[encoding.TextUnmarshaler](),
	reflect.TypeFor[encoding.BinaryUnmarshaler](),
}

// decodes reports whether envconfig decodes a t from one variable rather
// than reading its fields from several.
func decodes(t reflect.Type) bool {
	for _, d := range decoderTypes {
		if t.Implements(d) || reflect.PointerTo(t).Implements(d) {
			return true
		}
	}
	return false
}

// typeDescription names t as envconfig's usage does.
func typeDescription(t reflect.Type) string {
	// A named type goes by its name, unless the name is the builtin's
	// (envconfig compares a bool's or string's whole name, a number's
	// prefix).
	named := func(builtin, description string) string {
		name := t.Name()
		if name == "" || name == builtin || (t.Kind() != reflect.String && t.Kind() != reflect.Bool && strings.HasPrefix(name, builtin)) {
			return description
		}
		return name
	}
	switch t.Kind() {
	case reflect.Array, reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "String"
		}
		return "Comma-separated list of " + typeDescription(t.Elem())
	case reflect.Map:
		return fmt.Sprintf("Comma-separated list of %s:%s pairs", typeDescription(t.Key()), typeDescription(t.Elem()))
	case reflect.Pointer:
		return typeDescription(t.Elem())
	case reflect.Struct:
		if decodes(t) {
			return t.Name()
		}
		return ""
	case reflect.String:
		return named("string", "String")
	case reflect.Bool:
		return named("bool", "True or False")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return named("int", "Integer")
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return named("uint", "Unsigned Integer")
	case reflect.Float32, reflect.Float64:
		return named("float", "Float")
	}
	return t.String()
}

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
