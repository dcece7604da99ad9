//go:build e2e

package session

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// cpuProfile puts the server under ghz load through localhost:20000 and
// takes a CPU profile through localhost:6060, by hand and with Tilt's "CPU
// profile (10s)" button: both parse, and their samples include the echo
// handler. The button's profile is served by the server-pprof resource.
func cpuProfile(t *testing.T, s *session) {
	t.Helper()
	ghz := echo.StartGhz(t, suite.Root, serverGRPC, "profiled", 1000, "60s")
	defer ghz.Stop(time.Second)
	// Calling: the server's count of answered calls grows by ghz's rate.
	metrics := "http://" + serverMetrics + "/metrics"
	n0, err := echo.AnsweredCalls(metrics)
	if err != nil {
		t.Fatal(err)
	}
	err = kube.Poll(t.Context(), 30*time.Second, "ghz calling through "+serverGRPC, func(context.Context) (bool, string) {
		n, err := echo.AnsweredCalls(metrics)
		return err == nil && n >= n0+300, fmt.Sprintf("%v calls answered, %v before (%v)", n, n0, err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, ghz.Output())
	}

	data, err := echo.Get(t.Context(), "http://"+serverPprof+"/debug/pprof/profile?seconds=10")
	if err != nil {
		t.Fatalf("CPU profile from %s: %v", serverPprof, err)
	}
	checkEchoSamples(t, "the profile taken by hand", data)

	checkEchoSamples(t, "the button's profile", s.clickForProfile(t, "server-cpu-profile", 40*time.Second))

	err = kube.Poll(t.Context(), 90*time.Second, "pprof's web UI at "+serverPprofUI+" serving the profile", func(ctx context.Context) (bool, string) {
		body, err := echo.Get(ctx, "http://"+serverPprofUI+"/ui/")
		return err == nil && bytes.Contains(body, []byte("Echo")), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server-pprof serves the button's profile at http://%s/ui/", serverPprofUI)
}

// clickForProfile clicks a profile button of the server and returns the
// profile it saved as the latest, once it is there.
func (s *session) clickForProfile(t *testing.T, button string, timeout time.Duration) []byte {
	t.Helper()
	latest := filepath.Join(s.Dir, "build", "profiles", "server.pb.gz")
	clicked := time.Now()
	s.ClickButton(t, button)
	err := kube.Poll(t.Context(), timeout, "a new profile in "+latest+" after the click on "+button, func(context.Context) (bool, string) {
		info, err := os.Stat(latest)
		return err == nil && info.ModTime().After(clicked), fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Tilt(t, "logs", "server"))
	}
	data, err := os.ReadFile(latest)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// heapProfile clicks the server's "Heap profile" button: the profile it
// saves parses and holds in-use memory samples.
func heapProfile(t *testing.T, s *session) {
	t.Helper()
	heap, err := profile.ParseData(s.clickForProfile(t, "server-heap-profile", 30*time.Second))
	if err != nil {
		t.Fatalf("the heap profile does not parse: %v", err)
	}
	if !slices.ContainsFunc(heap.SampleType, func(st *profile.ValueType) bool { return st.Type == "inuse_space" }) || len(heap.Sample) == 0 {
		t.Errorf("the heap profile has sample types %v and %d samples, want inuse_space and some", heap.SampleType, len(heap.Sample))
	}
	t.Logf("the heap button's profile: %d samples", len(heap.Sample))
}

// checkEchoSamples parses a CPU profile and checks that samples were taken
// in the echo handler.
func checkEchoSamples(t *testing.T, what string, data []byte) {
	t.Helper()
	p, err := profile.ParseData(data)
	if err != nil {
		t.Fatalf("%s does not parse: %v", what, err)
	}
	in := 0
	for _, s := range p.Sample {
		for _, loc := range s.Location {
			if slices.ContainsFunc(loc.Line, func(l profile.Line) bool { return l.Function != nil && l.Function.Name == echoHandlerSym }) {
				in++
				break
			}
		}
	}
	t.Logf("%s: %d samples, %d of them in %s", what, len(p.Sample), in, echoHandlerSym)
	if in == 0 {
		t.Errorf("%s has no sample in %s", what, echoHandlerSym)
	}
}
