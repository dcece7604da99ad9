//go:build e2e

package loop

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
	"example.com/grpc-metrics/infra/proctest"
)

// BenchmarkTiltExampleGo times the edit-and-reload loop of Tilt's own Go
// example, tilt-dev/tilt-example-go's 3-recommended, on the current kube
// context, the way BenchmarkLiveUpdate times ours through localhost:20000:
// each iteration edits main.go so that its page answers with a new header,
// and is timed from the save to a GET through Tilt's forward of
// localhost:8000 that shows it, polling every userPoll once the example's
// process has logged that it serves.
//
// E2E_TILT_EXAMPLE_GO is a checkout of that directory; the benchmark runs
// `tilt up` in a copy of it and leaves the example deployed.
//
//	E2E_TILT_EXAMPLE_GO=~/src/tilt-example-go/3-recommended scripts/bench --loop-example
func BenchmarkTiltExampleGo(b *testing.B) {
	src := os.Getenv("E2E_TILT_EXAMPLE_GO")
	if src == "" {
		b.Skip("E2E_TILT_EXAMPLE_GO is not set: no checkout of tilt-example-go/3-recommended to time")
	}
	dir := b.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		b.Fatal(err)
	}
	const anchor = "func (r *ExampleRouter) index(w http.ResponseWriter, req *http.Request) {"
	main := filepath.Join(dir, "main.go")
	original, err := os.ReadFile(main)
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.Contains(original, []byte(anchor)) {
		b.Fatalf("main.go has no line %q to edit", anchor)
	}

	tilt := proctest.StartIn(b, dir, suite.Tilt, os.Environ(), "up", "--port", fmt.Sprint(tiltsession.DefaultPort), "--stream")
	b.Cleanup(func() {
		tilt.Stop(30 * time.Second)
	})
	const page = "http://127.0.0.1:8000/"
	edition := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, page, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		return resp.Header.Get("X-Edit"), nil
	}
	err = kube.Poll(b.Context(), 10*time.Minute, "the example answering on "+page, func(context.Context) (bool, string) {
		_, err := edition()
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		b.Fatalf("%v\n%s", err, tilt.Output())
	}
	time.Sleep(5 * time.Second) // the first deploy settles
	served := followExample(b)

	var times []time.Duration
	edits := 0
	for b.Loop() {
		edits++
		if _, err := edition(); err != nil {
			b.Fatalf("a GET before edit %d: %v", edits, err)
		}
		want := fmt.Sprint(edits)
		content := bytes.Replace(original, []byte(anchor), fmt.Appendf(nil, "%s\n\tw.Header().Set(\"X-Edit\", %q)", anchor, want), 1)
		began := time.Now()
		if err := os.WriteFile(main, content, 0o644); err != nil {
			b.Fatal(err)
		}
		// As for ours, GETs begin once the new process logs that it serves.
		took, failed := tiltsession.FirstAnswer(b, fmt.Sprintf("example edit %d on %s", edits, page), began,
			func() bool { return served().After(began) }, edition, want)
		times = append(times, took)
		b.Logf("example edit %2d: shown through localhost:8000 in %.2fs (%d GETs failed while polling)", edits, took.Seconds(), failed)
		time.Sleep(tiltsession.SettleTime)
	}
	p50, most := tiltsession.Median(times), slices.Max(times)
	b.ReportMetric(p50.Seconds(), "user-p50-s")
	b.ReportMetric(most.Seconds(), "user-max-s")
	b.Logf("tilt-example-go: %d edits, shown through localhost:8000 p50 %.2fs, max %.2fs", len(times), p50.Seconds(), most.Seconds())
}

// followExample follows the log of the example's pod (app=example-go, in
// the kube context's default namespace) and returns when its process last
// logged that it serves (zero before it does).
func followExample(b *testing.B) func() time.Time {
	b.Helper()
	pods, err := suite.Cluster.Client.CoreV1().Pods("default").List(b.Context(), metav1.ListOptions{LabelSelector: "app=example-go"})
	if err != nil || len(pods.Items) != 1 {
		b.Fatalf("want one example-go pod in the default namespace, have %d (%v)", len(pods.Items), err)
	}
	var mu sync.Mutex
	var last time.Time
	suite.Cluster.FollowLog(b, "default", pods.Items[0].Name, func(line []byte) {
		if bytes.Contains(line, []byte("Serving on port")) {
			mu.Lock()
			last = time.Now()
			mu.Unlock()
		}
	})
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}
