//go:build e2e

package stack

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"example.com/grpc-metrics/infra/proctest"
)

// TestLogFormat reads the programs' pod logs: console lines, one a message,
// in Tilt's dev build (its log panes); JSON lines, for a log collector, from
// infra/base.
func TestLogFormat(t *testing.T) {
	want, format := proctest.IsJSONLogLine, "JSON"
	switch suite.Deploy {
	case "tilt":
		want, format = func(line string) bool { return !proctest.IsJSONLogLine(line) }, "console"
	case "none":
		t.Skip("E2E_DEPLOY=none: what deployed the programs, and so their log format, is not known")
	}
	for _, app := range []string{"server", "client"} {
		pod := suite.Cluster.MustPods(t, namespace, app, false, 0)[0].Name
		data, err := suite.Cluster.Client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(t.Context())
		if err != nil {
			t.Fatalf("logs of %s: %v", pod, err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for _, line := range lines {
			if _, ok := proctest.ParseLogLine(line); !ok || !want(line) {
				t.Errorf("%s: not a %s log line: %q", pod, format, line)
			}
		}
		t.Logf("%s: %d %s log lines", pod, len(lines), format)
	}
}
