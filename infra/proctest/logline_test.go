package proctest

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// binDir holds the programs and the bench's baseline, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "proctest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := Build(filepath.Join("..", ".."), dir, "server", "client"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	baseline := exec.Command("go", "build", "-o", filepath.Join(dir, "baseline"), "./bench/baseline")
	baseline.Dir = ".."
	if out, err := baseline.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./bench/baseline: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

// tiltPrefix is what Tilt writes before each line of a pod's log.
const tiltPrefix = "server     │ "

// Every line that the programs and the bench's baseline print, in both log
// formats, is a log line with its time, level, caller and message, the same
// behind Tilt's prefix; and the "listening" line that announces their
// addresses carries the same fields in both formats, which Addr reads.
func TestProgramsLogLines(t *testing.T) {
	for _, tt := range []struct {
		name      string // of the binary
		what      string
		env       func(format string) []string
		args      func(format string) []string
		listeners []string
	}{
		{
			name: "server", what: "server",
			env: func(format string) []string {
				return []string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0", "SERVER_LOG_FORMAT=" + format}
			},
			listeners: []string{"grpc", "metrics"},
		},
		{
			// Its calls fail: grpc-go's warnings are lines of its own logger.
			name: "client", what: "client",
			env: func(format string) []string {
				return []string{"CLIENT_SERVER_ADDR=127.0.0.1:1", "CLIENT_RATE=50", "CLIENT_METRICS_PORT=0", "CLIENT_LOG_FORMAT=" + format}
			},
			listeners: []string{"metrics"},
		},
		{
			name: "baseline", what: "baseline bare",
			args: func(format string) []string {
				return []string{"-stack", "bare", "-addr", "127.0.0.1:0", "-log-format", format}
			},
			listeners: []string{"grpc"},
		},
		{
			name: "baseline", what: "baseline defaults",
			args: func(format string) []string {
				return []string{"-stack", "defaults", "-addr", "127.0.0.1:0", "-log-format", format}
			},
			listeners: []string{"grpc", "metrics"},
		},
	} {
		listening := map[string][]string{} // format: the keys of the listening line
		for _, format := range []string{"json", "console"} {
			var env, args []string
			if tt.env != nil {
				env = tt.env(format)
			}
			if tt.args != nil {
				args = tt.args(format)
			}
			t.Run(tt.what+" "+format, func(t *testing.T) {
				p := Start(t, filepath.Join(binDir, tt.name), env, args...)
				dialListeners(t, p, tt.listeners)
				time.Sleep(100 * time.Millisecond) // the client's first failed calls
				p.Stop(5 * time.Second)
				checkLogLines(t, p.Output(), format)
				found := Events(p.Output(), "listening")
				if len(found) != 1 {
					t.Fatalf("%d listening lines, want 1:\n%s", len(found), p.Output())
				}
				if found[0]["level"] != "info" {
					t.Errorf("listening at level %v, want info", found[0]["level"])
				}
				listening[format] = slices.Sorted(maps.Keys(found[0]))
			})
		}
		if diff := cmp.Diff(listening["json"], listening["console"]); len(listening) == 2 && diff != "" {
			t.Errorf("%s: the listening line's fields differ by format (-json +console):\n%s", tt.what, diff)
		}
	}
}

// Lines the programs print that the test above does not provoke, and lines
// that are not log lines.
func TestParseLogLine(t *testing.T) {
	for _, tt := range []struct {
		line string
		want map[string]any
	}{
		{
			// A named logger's line (the supervisor's) as Tilt shows it.
			line: "server     │ 2026-12-04T01:26:45.450Z\tWARN\thandover\tplatform/handover.go:200\thanded over\t{\"pid\": 12}",
			want: map[string]any{"ts": "2026-12-04T01:26:45.450Z", "level": "warn", "logger": "handover", "caller": "platform/handover.go:200", "msg": "handed over", "pid": float64(12)},
		},
		{
			// Local time east of UTC, no fields.
			line: "2026-12-04T01:26:45.450+0100\tINFO\tserver/run.go:64\tserving",
			want: map[string]any{"ts": "2026-12-04T01:26:45.450+0100", "level": "info", "caller": "server/run.go:64", "msg": "serving"},
		},
		{line: "server: invalid configuration: SERVER_MAX_NAME_BYTES=\"abc\": not a whole number"},
		{line: "2026-12-04T01:26:45.450Z\tINFO\tbroken\t{\"unterminated\": "},
		{line: "Reconnecting... Error port-forwarding server (20000 -> 20000): lost connection to pod"},
		{line: `{"msg":"listening","grpc":"127.0.0.1:20100"}`}, // no level: not zap's
	} {
		got, ok := ParseLogLine(tt.line)
		if ok != (tt.want != nil) || !cmp.Equal(got, tt.want) {
			t.Errorf("ParseLogLine(%q) = %v, %v; want %v", tt.line, got, ok, tt.want)
		}
	}
}

// dialListeners checks that each listener's address, as p logs it,
// accepts a connection.
func dialListeners(t *testing.T, p *Process, listeners []string) {
	t.Helper()
	for _, key := range listeners {
		addr := p.Addr(t, key, 10*time.Second)
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("%s address %s: %v", key, addr, err)
		}
		conn.Close()
	}
}

// checkLogLines checks that every line of output is a log line with its
// time, level, caller and message, in the format named format, and that it
// reads the same behind Tilt's prefix.
func checkLogLines(t *testing.T, output, format string) {
	t.Helper()
	for line := range strings.Lines(output) {
		line = strings.TrimSuffix(line, "\n")
		fields, ok := ParseLogLine(line)
		if !ok {
			t.Errorf("not a log line: %q", line)
			continue
		}
		for _, key := range []string{"ts", "level", "caller", "msg"} {
			if s, _ := fields[key].(string); s == "" {
				t.Errorf("ParseLogLine(%q): no %s in %v", line, key, fields)
			}
		}
		if (format == "json") != IsJSONLogLine(line) {
			t.Errorf("IsJSONLogLine(%q) = %v in the %s format", line, !(format == "json"), format)
		}
		prefixed, _ := ParseLogLine(tiltPrefix + line)
		if diff := cmp.Diff(fields, prefixed); diff != "" {
			t.Errorf("behind Tilt's prefix, %q reads otherwise (-alone +prefixed):\n%s", line, diff)
		}
	}
}
