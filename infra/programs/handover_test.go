package programs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// supervised runs bin (the server or the client, env its environment)
// under scripts/supervisor, as the dev image's PID 1 does, with its
// sockets on loopback: grpc and metrics, or the sockets names.
func supervised(t testing.TB, bin string, env []string, names ...string) *proctest.Process {
	t.Helper()
	if len(names) == 0 {
		names = []string{"grpc", "metrics"}
	}
	var args []string
	for _, n := range names {
		args = append(args, "--listen", n+"=127.0.0.1:0")
	}
	return proctest.Start(t, filepath.Join(binDir, "supervisor"), env, append(args, "--", bin)...)
}

// events returns the supervisor's log lines of event so far.
func events(p *proctest.Process, event string) []map[string]any {
	var lines []map[string]any
	for line := range strings.Lines(p.Output()) {
		if fields, ok := proctest.ParseLogLine(line); ok && fields["logger"] == "supervisor" && fields["event"] == event {
			lines = append(lines, fields)
		}
	}
	return lines
}

// handovers returns how many processes took over from another so far.
func handovers(p *proctest.Process) int {
	n := 0
	for _, e := range events(p, "serving") {
		if e["previous"] != nil {
			n++
		}
	}
	return n
}

// replace puts a new file at path as a live update does (tar: unlink, then
// create), from the file src or, when src is "", with content.
func replace(t testing.TB, path, src, content string) {
	t.Helper()
	data := []byte(content)
	if src != "" {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestHandover: live updates of the server and of the client, the way Tilt
// makes them (the binary replaced, SIGHUP to the supervisor), while the
// client calls at 100/s and new connections are opened to every port every
// 10ms. No connection is refused or fails, no call fails, the supervisor
// keeps its PID, and each hand-over is quick. A SIGTERM then drains the
// serving process as a pod's stop does, and the supervisor exits 0.
func TestHandover(t *testing.T) {
	dir := t.TempDir()
	serverBin, clientBin := filepath.Join(dir, "server"), filepath.Join(dir, "client")
	for _, b := range []string{serverBin, clientBin} {
		if err := os.WriteFile(b, mustRead(t, filepath.Join(binDir, filepath.Base(b))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	server := supervised(t, serverBin, serverEnv("SERVER_SHUTDOWN_TIMEOUT=10s", "SERVER_MAX_CONNECTION_AGE=10s"))
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	client := supervised(t, clientBin, clientEnv(grpcAddr, "CLIENT_RATE=100", "CLIENT_CONCURRENCY=4"), "metrics")
	serverMetrics, clientMetrics := server.Addr(t, "metrics", startTimeout), client.Addr(t, "metrics", startTimeout)
	proctest.Eventually(t, 10*time.Second, "both serve", func() bool {
		return proctest.GetMetrics(serverMetrics) == nil && proctest.GetMetrics(clientMetrics) == nil && proctest.CheckHealth(grpcAddr) == nil
	})

	var poll proctest.Poller
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { poll.Run(ctx, 10*time.Millisecond, grpcAddr, serverMetrics, clientMetrics) })

	// Each client worker counts its own calls; the failures of all of them
	// are in the log, one line each.
	const updates = 10
	var slowest time.Duration
	for i := range updates {
		for _, p := range []struct {
			proc *proctest.Process
			bin  string
		}{{server, serverBin}, {client, clientBin}} {
			before := handovers(p.proc)
			replace(t, p.bin, filepath.Join(binDir, filepath.Base(p.bin)), "")
			p.proc.Signal(t, syscall.SIGHUP)
			took := proctest.Eventually(t, 10*time.Second, fmt.Sprintf("hand-over %d of the %s", i+1, filepath.Base(p.bin)),
				func() bool { return handovers(p.proc) > before })
			slowest = max(slowest, took)
			time.Sleep(50 * time.Millisecond) // polls while the old one drains
		}
	}
	stop()
	wg.Wait()

	if n := poll.Failed(); n > 0 {
		t.Errorf("%d of %d new connections failed across %d hand-overs of each program, want 0:\n%s",
			n, n+poll.OK(), updates, strings.Join(poll.Failures(), "\n"))
	}
	if poll.OK() == 0 {
		t.Error("no poll succeeded")
	}
	if failed := client.Events("echo_failed"); len(failed) > 0 {
		t.Errorf("%d client calls failed across the hand-overs, want 0; first: %v", len(failed), failed[0])
	}
	for _, p := range []*proctest.Process{server, client} {
		select {
		case <-p.Done():
			t.Fatalf("a supervisor exited during the hand-overs:\n%s", p.Output())
		default:
		}
	}
	calls := value(scrape(t, "http://"+clientMetrics+"/metrics"), "echo_client_calls_total", map[string]string{"result": "ok"})
	if calls == 0 {
		t.Error("the last client worker made no successful call")
	}
	t.Logf("%d hand-overs of each program: %d new connections ok, 0 failed; slowest hand-over seen %v",
		updates, poll.OK(), slowest.Round(time.Millisecond))

	// SIGTERM reaches the worker, which drains as a pod's program does.
	server.Signal(t, syscall.SIGTERM)
	if code, sig := server.Wait(t, 15*time.Second); code != 0 {
		t.Errorf("server exit code %d (signal %v) after SIGTERM, want 0", code, sig)
	}
	if n := len(server.Events("draining")); n != 1 {
		t.Errorf("%d processes drained as at a shutdown, want 1 (the serving one)", n)
	}
}

// TestHandoverKeepsServingOnBadBinary: a live update whose file is not a
// program, or a program that exits at once, or one that refuses its
// configuration leaves the old worker serving, and the supervisor says why.
func TestHandoverKeepsServingOnBadBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	if err := os.WriteFile(bin, mustRead(t, filepath.Join(binDir, "server")), 0o755); err != nil {
		t.Fatal(err)
	}
	server := supervised(t, bin, serverEnv())
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	metricsAddr := server.Addr(t, "metrics", startTimeout)
	proctest.Eventually(t, 10*time.Second, "serves", func() bool { return proctest.CheckHealth(grpcAddr) == nil })

	var poll proctest.Poller
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { poll.Run(ctx, 10*time.Millisecond, grpcAddr, metricsAddr) })

	real := filepath.Join(binDir, "server")
	tests := []struct {
		name, content, wantOutput string
	}{
		{"not a program", "this is not an executable\n", "exec format error"},
		{"exits at once", "#!/bin/sh\nexit 3\n", "exit status 3"},
		{"bad configuration", "#!/bin/sh\nSERVER_MAX_NAME_BYTES=0 exec " + real + "\n", "SERVER_MAX_NAME_BYTES=0: must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(events(server, "start_failed"))
			replace(t, bin, "", tt.content)
			server.Signal(t, syscall.SIGHUP)
			proctest.Eventually(t, 10*time.Second, "the supervisor logs the failed start", func() bool {
				return len(events(server, "start_failed")) > before
			})
			if !strings.Contains(server.Output(), tt.wantOutput) {
				t.Errorf("the output does not say %q", tt.wantOutput)
			}
			if err := proctest.CheckHealth(grpcAddr); err != nil {
				t.Errorf("after the failed hand-over: %v", err)
			}
		})
	}
	// A good binary after the bad ones is taken.
	before := handovers(server)
	replace(t, bin, real, "")
	server.Signal(t, syscall.SIGHUP)
	proctest.Eventually(t, 10*time.Second, "the good binary takes over", func() bool { return handovers(server) > before })
	stop()
	wg.Wait()
	if n := poll.Failed(); n > 0 {
		t.Errorf("%d of %d new connections failed, want 0:\n%s", n, n+poll.OK(), strings.Join(poll.Failures(), "\n"))
	}
}

// TestHandoverRetiresWithOneConnection: one call in the first milliseconds
// of a hand-over, and nothing else, while the retiring process still
// accepts: the retiring process exits within its shutdown timeout. (Were
// the shared socket made blocking at the hand-over, that process would sit
// in accept(2) for the next connection, which no poller brings here, and
// never retire.) Every other time, a connection that sends nothing, left
// open, holds the retiring process up no longer either.
func TestHandoverRetiresWithOneConnection(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, mustRead(t, filepath.Join(binDir, "server")), 0o755); err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	server := supervised(t, bin, serverEnv("SERVER_SHUTDOWN_TIMEOUT="+timeout.String()))
	grpcAddr := server.Addr(t, "grpc", startTimeout)
	proctest.Eventually(t, 10*time.Second, "serves", func() bool { return proctest.CheckHealth(grpcAddr) == nil })
	for i := range 10 {
		before := handovers(server)
		replace(t, bin, filepath.Join(binDir, "server"), "")
		server.Signal(t, syscall.SIGHUP)
		time.Sleep(time.Duration(i%4) * time.Millisecond)
		if i%2 == 1 {
			conn, err := net.DialTimeout("tcp", grpcAddr, time.Second)
			if err != nil {
				t.Fatalf("hand-over %d: %v", i+1, err)
			}
			defer conn.Close()
		}
		if err := proctest.CheckHealth(grpcAddr); err != nil {
			t.Fatalf("hand-over %d: %v", i+1, err)
		}
		proctest.Eventually(t, 10*time.Second, fmt.Sprintf("hand-over %d", i+1), func() bool { return handovers(server) > before })
		var old int
		for _, e := range events(server, "serving") {
			if p, ok := e["previous"].(float64); ok {
				old = int(p)
			}
		}
		proctest.Eventually(t, timeout+2*time.Second, fmt.Sprintf("the process that served before hand-over %d exits", i+1), func() bool {
			return errors.Is(syscall.Kill(old, 0), syscall.ESRCH)
		})
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// BenchmarkHandover times hand-overs of the server while the client calls
// it 60 times a second: from the SIGHUP to the supervisor's line that the
// new process serves (its listeners taken, health SERVING), read from the
// line's own time.
//
//	go test -run '^$' -bench Handover -benchtime 50x ./programs
func BenchmarkHandover(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "server")
	if err := os.WriteFile(bin, mustRead(b, filepath.Join(binDir, "server")), 0o755); err != nil {
		b.Fatal(err)
	}
	server := supervised(b, bin, serverEnv("SERVER_SHUTDOWN_TIMEOUT=10s"))
	client := proctest.Start(b, filepath.Join(binDir, "client"), clientEnv(server.Addr(b, "grpc", startTimeout), "CLIENT_RATE=60"))
	client.Addr(b, "metrics", startTimeout)
	time.Sleep(time.Second) // calls flow
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		before := handovers(server)
		replace(b, bin, filepath.Join(binDir, "server"), "")
		sent := time.Now()
		server.Signal(b, syscall.SIGHUP)
		proctest.Eventually(b, 10*time.Second, fmt.Sprintf("hand-over %d", i+1), func() bool { return handovers(server) > before })
		var ts string
		for _, e := range events(server, "serving") {
			if e["previous"] != nil {
				if before == 0 {
					ts, _ = e["ts"].(string)
					break
				}
				before--
			}
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
		if err != nil {
			b.Fatalf("hand-over %d: the line's time %q: %v", i+1, ts, err)
		}
		// The line's time has milliseconds; sent is rounded down alike.
		took = append(took, at.Sub(sent.Truncate(time.Millisecond)))
		time.Sleep(100 * time.Millisecond) // the old process drains
	}
	b.StopTimer()
	if failed := client.Events("echo_failed"); len(failed) > 0 {
		b.Errorf("%d client calls failed across the hand-overs, want 0; first: %v", len(failed), failed[0])
	}
	slices.Sort(took)
	p50, worst := took[len(took)/2], took[len(took)-1]
	b.Logf("%d hand-overs under the client's 60 calls/s: SIGHUP to the new process serving p50 %v, max %v",
		len(took), p50.Round(time.Millisecond), worst.Round(time.Millisecond))
	b.ReportMetric(float64(p50)/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(worst)/float64(time.Millisecond), "max-ms")
}
