//go:build e2e

package loop

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// BenchmarkLiveUpdateCopy times what a live update's sync costs as a function
// of the file's size: the copy Tilt makes into a running server pod, the same
// way (`tar -C / -x -f -` on the pod's exec API, websocket first, SPDY as
// the fallback), of files cut from a real server binary, so that they
// compress as one does. Sizes are taken in turn, so that the cluster's load
// falls on all alike; an exec of `true` gives the part that does not depend
// on size. One more row copies the binary compressed (gzip, fastest level)
// and unpacks it in the pod: the compression, the copy and the unpacking.
//
//	E2E_DEPLOY=none go test -tags e2e -run '^$' -bench LiveUpdateCopy -benchtime 10x ./e2e
func BenchmarkLiveUpdateCopy(b *testing.B) {
	c := suite.Cluster
	ctx := b.Context()
	pod := suite.Cluster.MustPods(b, namespace, "server", false, 0)[0].Name
	binary := filepath.Join(b.TempDir(), "server")
	build := exec.CommandContext(ctx, filepath.Join(suite.Root, "scripts", "build"), "server", binary)
	build.Dir = suite.Root
	build.Env = append(os.Environ(), "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("scripts/build server: %v\n%s", err, out)
	}
	program, err := os.ReadFile(binary)
	if err != nil {
		b.Fatal(err)
	}
	const dst = "app/copy-bench" // beside the program: the directory a live update writes
	b.Cleanup(func() {
		_, _, _ = c.Exec(context.Background(), namespace, pod, nil, "rm", "-f", "/"+dst, "/"+dst+".gz")
	})

	const mb = 1_000_000
	sizes := []int{4 * mb, 8 * mb, len(program), 17 * mb, 24 * mb, 32 * mb}
	archives := make([][]byte, len(sizes))
	for i, n := range sizes {
		archives[i] = tarOf(b, dst, cut(program, n))
	}
	copies := make([][]time.Duration, len(sizes))
	var fixed, compress, gzCopy, unpack []time.Duration
	var gzSize int
	for b.Loop() {
		start := time.Now()
		if _, _, err := c.Exec(ctx, namespace, pod, nil, "true"); err != nil {
			b.Fatalf("exec true: %v", err)
		}
		fixed = append(fixed, time.Since(start))
		for i, a := range archives {
			start := time.Now()
			if _, out, err := c.Exec(ctx, namespace, pod, bytes.NewReader(a), "tar", "-C", "/", "-x", "-f", "-"); err != nil {
				b.Fatalf("copy %d bytes: %v %s", sizes[i], err, out)
			}
			copies[i] = append(copies[i], time.Since(start))
		}
		comp, cp, unp, n := copyCompressed(b, pod, dst, program)
		compress, gzCopy, unpack, gzSize = append(compress, comp), append(gzCopy, cp), append(unpack, unp), n
	}

	row := func(what string, d []time.Duration) {
		lo, hi := slices.Min(d), slices.Max(d)
		b.Logf("%-44s median %4.0f ms [%4.0f, %4.0f] of %d", what, ms(tiltsession.Median(d)), ms(lo), ms(hi), len(d))
	}
	b.Logf("pod %s, %d rounds", pod, len(fixed))
	row("exec of `true` (the part size does not change)", fixed)
	for i, n := range sizes {
		what := fmt.Sprintf("copy of %.1f MB", float64(n)/mb)
		if n == len(program) {
			what += " (the server, scripts/build)"
		}
		row(what, copies[i])
	}
	// The slope, from the smallest to the largest file.
	first, last := tiltsession.Median(copies[0]), tiltsession.Median(copies[len(sizes)-1])
	perMB := ms(last-first) / (float64(sizes[len(sizes)-1]-sizes[0]) / mb)
	b.Logf("copy: %.1f ms per MB beyond a fixed %.0f ms", perMB, ms(first)-perMB*float64(sizes[0])/mb)
	row(fmt.Sprintf("gzip -1 of the server on the host (%.1f MB)", float64(gzSize)/mb), compress)
	row("copy of it", gzCopy)
	row("gunzip in the pod", unpack)
	b.ReportMetric(perMB, "ms/MB")
	b.ReportMetric(ms(tiltsession.Median(copies[slices.Index(sizes, len(program))])), "server-copy-ms")
	b.ReportMetric(ms(tiltsession.Median(compress)+tiltsession.Median(gzCopy)+tiltsession.Median(unpack)), "gzip-path-ms")
}

// copyCompressed compresses program (gzip, fastest level), copies it into
// pod at dst.gz as a live update would, and unpacks it there to dst. It
// returns how long each step took and the compressed size.
func copyCompressed(b *testing.B, pod, dst string, program []byte) (compress, copied, unpack time.Duration, size int) {
	c, ctx := suite.Cluster, b.Context()
	start := time.Now()
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := w.Write(program); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	archive := tarOf(b, dst+".gz", gz.Bytes())
	compress = time.Since(start)
	start = time.Now()
	if _, out, err := c.Exec(ctx, namespace, pod, bytes.NewReader(archive), "tar", "-C", "/", "-x", "-f", "-"); err != nil {
		b.Fatalf("copy the compressed binary: %v %s", err, out)
	}
	copied = time.Since(start)
	start = time.Now()
	if _, out, err := c.Exec(ctx, namespace, pod, nil, "sh", "-c", "gunzip -c /"+dst+".gz > /"+dst); err != nil {
		b.Fatalf("unpack: %v %s", err, out)
	}
	unpack = time.Since(start)
	return compress, copied, unpack, gz.Len()
}

// cut returns the first n bytes of data repeated as often as needed.
func cut(data []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, data[:min(len(data), n-len(out))]...)
	}
	return out
}

// tarOf is an archive of one executable file at path, as Tilt sends it.
func tarOf(b *testing.B, path string, data []byte) []byte {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	if err := w.WriteHeader(&tar.Header{Name: path, Mode: 0o755, Size: int64(len(data)), ModTime: time.Now()}); err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
