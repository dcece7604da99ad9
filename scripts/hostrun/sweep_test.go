package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// sweep deletes the slices when no hostrun holds the lock, and leaves them
// while one does.
func TestSweep(t *testing.T) {
	dir := t.TempDir()
	kubectl := filepath.Join(dir, "kubectl")
	// A kubectl that records its calls and prints what a delete deletes.
	if err := os.WriteFile(kubectl, []byte("#!/bin/sh\necho \"$*\" >>\"$(dirname \"$0\")/calls\"\necho 'endpointslice.discovery.k8s.io \"server-service-hostrun\" deleted'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(dir, "server.lock")
	cfg, err := parseSweep([]string{"--context", "kind-x", "--namespace", "echo", "--kubectl", kubectl, "--lock", lockPath,
		"--service", "server-service", "--service", "server-metrics-service"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	calls := func() string { b, _ := os.ReadFile(filepath.Join(dir, "calls")); return string(b) }

	// A hostrun runs: its shared lock.
	held, err := lock(lockPath, syscall.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cfg.sweep(&out); err != nil {
		t.Fatal(err)
	}
	if calls() != "" || !strings.Contains(out.String(), "a hostrun runs") {
		t.Fatalf("with a hostrun running: kubectl calls %q, output %q; want none and a word", calls(), out.String())
	}
	held.Close() // as its process ends, even by SIGKILL

	out.Reset()
	if err := cfg.sweep(&out); err != nil {
		t.Fatal(err)
	}
	if want := "--context kind-x --namespace echo --request-timeout 5s delete endpointslice --ignore-not-found --wait=false server-service-hostrun server-metrics-service-hostrun\n"; calls() != want {
		t.Errorf("kubectl calls %q, want %q", calls(), want)
	}
	if !strings.Contains(out.String(), "deleted the slices a stopped hostrun left") {
		t.Errorf("output %q", out.String())
	}
	// The sweep's own exclusive lock is gone with it: a hostrun starts.
	again, err := lock(lockPath, syscall.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
}

func TestParseSweep(t *testing.T) {
	if _, err := parseSweep([]string{"--context", "c", "--namespace", "n", "--lock", "l"}, os.Stderr); err == nil || !strings.Contains(err.Error(), "usage: hostrun sweep") {
		t.Errorf("no --service: %v", err)
	}
}
