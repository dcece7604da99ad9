package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// micro runs the in-process benchmarks and has benchstat compare the
// servers: the sub-benchmarks are named server=bare, server=ours/log=info...
func micro(ctx context.Context, s settings, b binaries, dir string) error {
	// Ours against bare, then each part of ours alone against bare: where
	// the difference goes; then the gRPC port with and without the page
	// for browsers.
	for _, run := range []struct{ bench, col string }{
		{"^BenchmarkEcho(Call|Handler)$", "/server"},
		{"^BenchmarkEchoCallPart$", "/part"},
		{"^BenchmarkGRPCPort$", "/listener"},
	} {
		cmd := exec.CommandContext(ctx, b.serverTest, "-test.run", "^$", "-test.bench", run.bench, "-test.benchmem",
			"-test.benchtime", s.microTime, "-test.count", strconv.Itoa(s.microCount))
		cmd.Dir = filepath.Join(s.root, "services", "server")
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("micro benchmarks %s: %w\n%s", run.bench, err, out)
		}
		file := filepath.Join(dir, "micro.txt")
		if err := os.WriteFile(file, out, 0o644); err != nil {
			return err
		}
		bs := exec.CommandContext(ctx, "go", "tool", "benchstat", "-col", run.col, file)
		bs.Dir = filepath.Join(s.root, "infra")
		bs.Stdout, bs.Stderr = os.Stdout, os.Stderr
		if err := bs.Run(); err != nil {
			return err
		}
	}
	return nil
}
