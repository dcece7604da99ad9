package proctest

import (
	"bufio"
	"encoding/json"
	"regexp"
	"strings"
)

// consoleStart finds where a console log line of zap begins: its ISO 8601
// time and a level, tab-separated, possibly after a prefix (Tilt's
// "server │ ").
var consoleStart = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[.0-9]*(?:Z|[+-]\d\d(?::?\d\d)?)\t(?:DEBUG|INFO|WARN|ERROR|DPANIC|PANIC|FATAL)\t`)

// ParseLogLine reads one log line of the programs, or of the bench's
// baseline, in either of their formats (zap's production encoders), after
// any prefix: JSON (one object, its level first) or console (time, level,
// logger name, caller and message, tab-separated, then the fields as one
// JSON object). It returns the line's fields, with ts, level (lower case),
// logger, caller and msg as the JSON format names them, and whether it was
// a log line at all. Their "listening" event, which Addr reads, is one.
func ParseLogLine(line string) (map[string]any, bool) {
	if i := strings.Index(line, `{"level":`); i >= 0 {
		var fields map[string]any
		if json.Unmarshal([]byte(line[i:]), &fields) == nil {
			return fields, true
		}
	}
	loc := consoleStart.FindStringIndex(line)
	if loc == nil {
		return nil, false
	}
	parts := strings.Split(strings.TrimRight(line[loc[0]:], "\r\n"), "\t")
	fields := map[string]any{}
	if last := parts[len(parts)-1]; len(parts) > 3 && strings.HasPrefix(last, "{") {
		if json.Unmarshal([]byte(last), &fields) != nil {
			return nil, false
		}
		parts = parts[:len(parts)-1]
	}
	// time, level, [logger], [caller], message
	fields["ts"], fields["level"] = parts[0], strings.ToLower(parts[1])
	parts = parts[2:]
	if len(parts) == 0 {
		return nil, false
	}
	fields["msg"], parts = parts[len(parts)-1], parts[:len(parts)-1]
	for _, p := range parts {
		if strings.Contains(p, ".go:") {
			fields["caller"] = p
		} else {
			fields["logger"] = p
		}
	}
	return fields, true
}

// IsJSONLogLine reports whether line is a log line in the JSON format.
func IsJSONLogLine(line string) bool {
	var fields map[string]any
	return json.Unmarshal([]byte(line), &fields) == nil && fields["msg"] != nil
}

// Events returns the log lines of out (a program's zap output, in either
// format) whose event field is event, each as its fields. The checks read
// what happened from event, never from the message, which is for people
// and may be reworded.
func Events(out, event string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line, ok := ParseLogLine(sc.Text()); ok && line["event"] == event {
			lines = append(lines, line)
		}
	}
	return lines
}
