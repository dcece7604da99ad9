package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// binaries built for the run.
type binaries struct {
	server, client, baseline, serverTest, ghz string
	serverAt                                  string // the server at -compare's revision, for the cpu section; "" without
}

func build(ctx context.Context, root, dir string) (binaries, error) {
	b := binaries{
		server: filepath.Join(dir, "server"), client: filepath.Join(dir, "client"),
		baseline: filepath.Join(dir, "baseline"), serverTest: filepath.Join(dir, "server.test"),
	}
	goos, goarch := "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH
	steps := []struct {
		dir  string
		env  []string
		argv []string
	}{
		{root, []string{goos, goarch}, []string{"scripts/build", "server", b.server}},
		{root, []string{goos, goarch}, []string{"scripts/build", "client", b.client}},
		// The baselines are built like the server (scripts/build): static,
		// trimmed, stripped, without grpc-go's x/net/trace.
		{filepath.Join(root, "infra"), []string{"CGO_ENABLED=0"}, []string{"go", "build", "-trimpath", "-tags=grpcnotrace", "-ldflags=-s -w", "-o", b.baseline, "./bench/baseline"}},
		{root, nil, []string{"go", "test", "-c", "-o", b.serverTest, "./services/server"}},
	}
	for _, st := range steps {
		if err := command(ctx, st.dir, st.env, st.argv...); err != nil {
			return b, err
		}
	}
	var err error
	if b.ghz, err = proctest.Tool(filepath.Join(root, "infra"), "ghz"); err != nil {
		return b, err
	}
	fmt.Println("built server, client, baseline and server.test; ghz pinned in infra/go.mod")
	return b, nil
}

// buildAt builds the server of git revision rev of root into dir, as build
// builds the working tree's.
func buildAt(ctx context.Context, root, rev, dir string) (string, error) {
	src, out := filepath.Join(dir, "src-"+rev), filepath.Join(dir, "server-"+rev)
	if err := exportSources(ctx, root, rev, src); err != nil {
		return "", err
	}
	if err := command(ctx, src, []string{"GOOS=" + runtime.GOOS, "GOARCH=" + runtime.GOARCH}, "scripts/build", "server", out); err != nil {
		return "", err
	}
	fmt.Printf("built the server at %s\n", rev)
	return out, nil
}

// command runs argv in dir ("" for this one) with env added to this
// process's environment; its error carries the command's output.
func command(ctx context.Context, dir string, env []string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// program is a running server or client whose addresses came from its log.
type program struct {
	*proctest.Process
	addrs map[string]string
}

func (p *program) stop() { p.Stop(15 * time.Second) }

// startProgram runs path and waits for its "listening" log line, which
// must name the listener key.
func startProgram(_ context.Context, path, key string, env []string, args ...string) (*program, error) {
	proc, err := proctest.Run("", path, env, args...)
	if err != nil {
		return nil, err
	}
	p := &program{Process: proc, addrs: map[string]string{}}
	addr, err := proc.WaitAddr(key, 10*time.Second)
	if err != nil {
		p.stop()
		return nil, err
	}
	p.addrs[key] = addr
	// The same line names the metrics and pprof listeners, if the program
	// has them.
	for _, other := range []string{"metrics", "debug"} {
		if addr, err := proc.WaitAddr(other, 0); err == nil {
			p.addrs[other] = addr
		}
	}
	return p, nil
}

// cpuNanos is the CPU time (user and system) of every thread of pid, in ns,
// from the scheduler's statistics.
func cpuNanos(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("schedstat: %w", err)
		}
		total += ns
	}
	return total, nil
}

// ghz runs ghz against addr with args and returns its JSON report.
func ghz(ctx context.Context, b binaries, root, addr string, args ...string) (ghzReport, error) {
	argv := append([]string{"--insecure", "--proto", filepath.Join(root, "proto", "foo.proto"), "--call", "foo.Foo/echo",
		"-d", `{"name":"world"}`, "--format", "json"}, args...)
	cmd := exec.CommandContext(ctx, b.ghz, append(argv, addr)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ghzReport{}, fmt.Errorf("ghz: %w: %s", err, stderr.String())
	}
	var r ghzReport
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("ghz report: %w", err)
	}
	return r, nil
}

// ghzReport is the part of ghz's JSON report the bench reads.
type ghzReport struct {
	Count         int                `json:"count"`
	RPS           float64            `json:"rps"`
	StatusCodeDst map[string]int     `json:"statusCodeDistribution"`
	Latency       []ghzLatencyDetail `json:"latencyDistribution"`
}

type ghzLatencyDetail struct {
	Percentage int   `json:"percentage"`
	Latency    int64 `json:"latency"` // ns
}

func (r ghzReport) failed() int {
	n := 0
	for code, c := range r.StatusCodeDst {
		if code != "OK" {
			n += c
		}
	}
	return n
}

func (r ghzReport) percentileMs(p int) float64 {
	for _, l := range r.Latency {
		if l.Percentage == p {
			return float64(l.Latency) / 1e6
		}
	}
	return 0
}
