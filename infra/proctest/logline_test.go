package proctest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The lines are the programs' own: the server's with SERVER_LOG_FORMAT
// console and json, the second as Tilt shows a pod's line.
func TestParseLogLine(t *testing.T) {
	for _, tt := range []struct {
		line string
		want map[string]any
	}{
		{
			line: "2026-12-04T01:26:43.456Z\tINFO\tplatform/lifecycle.go:108\tlistening\t{\"program\": \"server\", \"grpc\": \"[::]:43623\"}",
			want: map[string]any{"ts": "2026-12-04T01:26:43.456Z", "level": "info", "caller": "platform/lifecycle.go:108", "msg": "listening", "program": "server", "grpc": "[::]:43623"},
		},
		{
			line: "server     │ 2026-12-04T01:26:45.450Z\tWARN\thandover\tplatform/handover.go:200\thanded over\t{\"pid\": 12}",
			want: map[string]any{"ts": "2026-12-04T01:26:45.450Z", "level": "warn", "logger": "handover", "caller": "platform/handover.go:200", "msg": "handed over", "pid": float64(12)},
		},
		{
			line: "2026-12-04T01:26:45.450+0100\tINFO\tserver/run.go:64\tserving",
			want: map[string]any{"ts": "2026-12-04T01:26:45.450+0100", "level": "info", "caller": "server/run.go:64", "msg": "serving"},
		},
		{
			line: `{"level":"info","ts":"2026-12-04T01:26:43.456Z","caller":"server/run.go:64","msg":"serving","program":"server"}`,
			want: map[string]any{"level": "info", "ts": "2026-12-04T01:26:43.456Z", "caller": "server/run.go:64", "msg": "serving", "program": "server"},
		},
		{line: "server: invalid configuration: SERVER_MAX_NAME_BYTES=\"abc\": not a whole number"},
		{line: "2026-12-04T01:26:45.450Z\tINFO\tbroken\t{\"unterminated\": "},
		{line: "Reconnecting... Error port-forwarding server (20000 -> 20000): lost connection to pod"},
	} {
		got, ok := ParseLogLine(tt.line)
		if ok != (tt.want != nil) || !cmp.Equal(got, tt.want) {
			t.Errorf("ParseLogLine(%q) = %v, %v; want %v", tt.line, got, ok, tt.want)
		}
	}
}
