// Package proctest runs programs as real processes for tests: the project's
// server and client, built once, or any other binary (a Prometheus server).
// The project's programs listen on port 0 in tests; Addr reads the addresses
// they bound from their "listening" log line, so no test picks a port that
// another may take first.
package proctest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the programs named (server, client) of the module rooted at
// root into dir, for this machine.
func Build(root, dir string, programs ...string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, p := range programs {
		args = append(args, "./services/"+p)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(programs, " "), err, out)
	}
	return nil
}

// BuildSupervisor compiles scripts/supervisor, the dev image's PID 1, of
// the repository rooted at root into dir, for this machine.
func BuildSupervisor(root, dir string) error {
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "supervisor"), "./supervisor")
	cmd.Dir = filepath.Join(root, "scripts")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./supervisor: %w\n%s", err, out)
	}
	return nil
}

// Process is a running program whose output is kept.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed

	mu  sync.Mutex
	out bytes.Buffer
}

// Run starts path with args in the working directory dir ("" for this
// one), its environment env added to one that holds only PATH and HOME. The
// kernel kills it if this process dies first (Linux); Stop ends it.
func Run(dir, path string, env []string, args ...string) (*Process, error) {
	p := &Process{name: filepath.Base(path), cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	diesWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Start runs path with args and env as Run does, and kills it when the test
// ends if it still runs. The output is logged when the test fails.
func Start(t testing.TB, path string, env []string, args ...string) *Process {
	t.Helper()
	return StartIn(t, "", path, env, args...)
}

// StartIn is Start in the working directory dir.
func StartIn(t testing.TB, dir, path string, env []string, args ...string) *Process {
	t.Helper()
	p, err := Run(dir, path, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(0)
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.Output())
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to grace for the program to exit, then
// kills it; with no grace it kills it at once.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	if grace > 0 {
		p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited meanwhile
		select {
		case <-p.done:
			return
		case <-time.After(grace):
		}
	}
	p.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
	<-p.done
}

// Write keeps the program's output.
func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns everything the program wrote to stdout and stderr so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the program has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the program.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// Wait waits for the program to exit and returns its exit code, or -1 with
// the signal that ended it; it fails the test after timeout.
func (p *Process) Wait(t testing.TB, timeout time.Duration) (code int, signal syscall.Signal) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.name, timeout)
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, ws.Signal()
	}
	return p.cmd.ProcessState.ExitCode(), 0
}

// Addr waits up to timeout for the program's "listening" event (logged at
// info level) and returns the loopback address of its listener named key
// ("grpc" or "metrics").
func (p *Process) Addr(t testing.TB, key string, timeout time.Duration) string {
	t.Helper()
	addr, err := p.WaitAddr(key, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// WaitAddr is Addr for programs that are not tests.
func (p *Process) WaitAddr(key string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if addr := listeningAddr(p.Output(), key); addr != "" {
			return addr, nil
		}
		select {
		case <-p.done:
			return "", fmt.Errorf("%s exited before it logged its %s address:\n%s", p.name, key, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s logged no %s address within %v", p.name, key, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Events returns the program's log lines whose event field is event, each
// as its fields.
func (p *Process) Events(event string) []map[string]any { return Events(p.Output(), event) }

// listeningAddr finds the log line {"event":"listening", key: "[::]:port"}
// (or "host:port,host:port" for several hosts, on one port) in out and
// returns 127.0.0.1:port, or "" when there is none yet.
func listeningAddr(out, key string) string {
	for _, line := range Events(out, "listening") {
		s, _ := line[key].(string)
		first, _, _ := strings.Cut(s, ",")
		if _, port, err := net.SplitHostPort(first); err == nil {
			return net.JoinHostPort("127.0.0.1", port)
		}
	}
	return ""
}

// Poll is the one wait of the checks: it asks cond every interval until it
// reports done, and fails after timeout with what it waited for and cond's
// last reason.
func Poll(ctx context.Context, interval, timeout time.Duration, what string, cond func(context.Context) (done bool, why string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, why := cond(ctx)
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %v (%s)", what, timeout, why)
		case <-time.After(interval):
		}
	}
}

// Eventually is Poll every 20ms for a test: it fails the test when timeout
// passes first, and returns how long cond took to hold.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if err := Poll(t.Context(), 20*time.Millisecond, timeout, what, func(context.Context) (bool, string) { return cond(), "" }); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// Tool returns the path of the Go tool name that the module in dir pins (go
// tool -n), which the go command builds the first time and caches.
func Tool(dir, name string) (string, error) {
	cmd := exec.Command("go", "tool", "-n", name)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool -n %s: %w\n%s", name, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}
