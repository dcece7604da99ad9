package tiltsession

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// PollForwards opens a new connection to Tilt's forwards of the server's
// gRPC port and of metricsPorts every 100ms, as a person at a terminal does,
// until stop is called.
func (s *Session) PollForwards(t testing.TB, metricsPorts ...int) (p *proctest.Poller, stop func()) {
	p = new(proctest.Poller)
	var metrics []string
	for _, port := range metricsPorts {
		metrics = append(metrics, s.Target.Local(port))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, 100*time.Millisecond, s.Target.Local(20000), metrics...) })
	return p, func() { cancel(); wg.Wait() }
}

// ForwardErrors returns the lines of Tilt's log, from byte from on, that tell
// of a port-forward's error or lost connection.
func (s *Session) ForwardErrors(from int) []string {
	return forwardErrors(s.Proc.Output()[from:])
}

// forwardErrors returns the lines of a Tilt log that tell of a
// port-forward's error or lost connection.
func forwardErrors(log string) []string {
	var lines []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "port-forward") && (strings.Contains(line, "rror") || strings.Contains(line, "lost connection")) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}
