package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// innerLoop reports the binaries' sizes, exec to SERVING of ours and bare,
// and the server's rebuild after a one-line edit; with -compare REV, that
// rebuild of the tree at REV too, the two alternating.
func innerLoop(ctx context.Context, s settings, b binaries, dir string, rep *report) error {
	if err := sizeSection(b, rep); err != nil {
		return err
	}
	if err := startSection(ctx, s, b, rep); err != nil {
		return err
	}
	return rebuildSection(ctx, s, dir, rep)
}

// sizeSection reports the sizes of the server, the client and the baseline.
func sizeSection(b binaries, rep *report) error {
	w := table()
	fmt.Fprintln(w, "binary\tMiB")
	sizes := map[string]float64{}
	for name, path := range map[string]string{"server": b.server, "client": b.client, "baseline": b.baseline} {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		sizes[name] = float64(st.Size()) / (1 << 20)
	}
	for _, name := range []string{"server", "client", "baseline"} {
		fmt.Fprintf(w, "%s\t%.1f\n", name, sizes[name])
	}
	w.Flush()
	rep.add("binary MiB server, client (bare)", fmt.Sprintf("%.1f, %.1f (%.1f)", sizes["server"], sizes["client"], sizes["baseline"]))
	return nil
}

// startSection reports exec to SERVING of ours and bare, the median of
// s.starts starts each, the two alternating.
func startSection(ctx context.Context, s settings, b binaries, rep *report) error {
	starts := map[string][]float64{}
	err := rotate(s.starts, []target{{name: "ours"}, {name: "bare"}}, func(_ int, t target) error {
		path, env, args := b.server, []string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0"}, []string(nil)
		if t.name == "bare" {
			path, env, args = b.baseline, nil, []string{"-stack", "bare", "-addr", "127.0.0.1:0"}
		}
		ms, err := startToServing(ctx, path, env, args)
		if err != nil {
			return err
		}
		starts[t.name] = append(starts[t.name], ms)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("exec to SERVING, median of %d: ours %.1f ms, bare %.1f ms\n", s.starts, median(starts["ours"]), median(starts["bare"]))
	rep.add("exec to SERVING ms, ours (bare)", fmt.Sprintf("%.1f (%.1f)", median(starts["ours"]), median(starts["bare"])))
	return nil
}

// rebuildSection reports the server's rebuild after a one-line edit, in a
// copy of the working tree in dir; with -compare REV, that of the tree at
// REV too, the two alternating.
func rebuildSection(ctx context.Context, s settings, dir string, rep *report) error {
	// Rebuild after a one-line edit, warm cache, in copies of the sources so
	// the working tree is never touched.
	trees := []target{{name: "working tree"}}
	srcs := map[string]string{"working tree": filepath.Join(dir, "src")}
	if err := copySources(ctx, s.root, srcs["working tree"]); err != nil {
		return err
	}
	if s.compare != "" {
		trees = append(trees, target{name: s.compare})
		srcs[s.compare] = filepath.Join(dir, "src-"+s.compare)
		if err := exportSources(ctx, s.root, s.compare, srcs[s.compare]); err != nil {
			return err
		}
	}
	rebuilds := map[string][]float64{}
	edits := map[string]int{}
	err := rotate(s.edits+1, trees, func(round int, t target) error {
		ms, err := rebuild(ctx, srcs[t.name], edits[t.name], filepath.Join(dir, "rebuilt"))
		edits[t.name]++
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if round > 0 { // the first warms the cache
			rebuilds[t.name] = append(rebuilds[t.name], ms)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range trees {
		fmt.Printf("rebuild after a one-line edit (scripts/build server, warm cache), %s: median %s ms of %d\n",
			t.name, spread("%.0f", rebuilds[t.name]), len(rebuilds[t.name]))
	}
	rep.add("rebuild after a one-line edit ms", fmt.Sprintf("%.0f", median(rebuilds["working tree"])))
	if s.compare != "" {
		var ratios []float64
		for i := range rebuilds[s.compare] {
			ratios = append(ratios, rebuilds["working tree"][i]/rebuilds[s.compare][i])
		}
		fmt.Printf("working tree / %s, edit by edit: median %s\n", s.compare, spread("%.3f", ratios))
		rep.add("rebuild ms, working tree / "+s.compare+" (median ratio [min, max])", fmt.Sprintf("%.0f / %.0f (%s)",
			median(rebuilds["working tree"]), median(rebuilds[s.compare]), spread("%.3f", ratios)))
	}
	return nil
}

// buildSources are what scripts/build server reads.
var buildSources = []string{"go.mod", "go.sum", "proto", "services", "scripts/build"}

// copySources copies the build's sources of the working tree root to dst.
func copySources(ctx context.Context, root, dst string) error {
	for _, p := range buildSources {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, p)), 0o755); err != nil {
			return err
		}
		if err := command(ctx, "", nil, "cp", "-r", filepath.Join(root, p), filepath.Join(dst, p)); err != nil {
			return err
		}
	}
	return nil
}

// exportSources writes the build's sources at git revision rev to dst.
func exportSources(ctx context.Context, root, rev, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	tarball := dst + ".tar"
	if err := command(ctx, root, nil, append([]string{"git", "archive", "-o", tarball, rev}, buildSources...)...); err != nil {
		return err
	}
	return command(ctx, "", nil, "tar", "-x", "-f", tarball, "-C", dst)
}

// rebuild appends a comment to the server's echo.go in src (edit n) and
// times scripts/build server, in ms.
func rebuild(ctx context.Context, src string, n int, out string) (float64, error) {
	f := filepath.Join(src, "services", "server", "echo.go")
	data, err := os.ReadFile(f)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(f, fmt.Appendf(data, "\n// edit %d\n", n), 0o644); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := command(ctx, src, nil, "scripts/build", "server", out); err != nil {
		return 0, err
	}
	return float64(time.Since(start).Milliseconds()), nil
}

// startToServing times exec to the first SERVING answer of grpc.health.v1.
func startToServing(ctx context.Context, path string, env, args []string) (float64, error) {
	start := time.Now()
	p, err := startProgram(ctx, path, "grpc", env, args...)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	conn, err := grpc.NewClient(p.addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for time.Since(start) < 10*time.Second {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return float64(time.Since(start).Microseconds()) / 1000, nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, errors.New("not SERVING within 10s")
}
