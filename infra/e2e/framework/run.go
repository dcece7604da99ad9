package framework

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"

	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// Run is what a spec package's TestMain sets up before its tests.
type Run struct {
	Settings
	Root    string        // the repository
	Cluster *kube.Cluster // of the current kube context
	Harness tiltsession.Harness
}

// Setup reads the settings, connects to the cluster of the current kube
// context and says which it is. root is the repository, relative to the
// spec package.
func Setup(root string) (*Run, error) {
	// client-go logs every connection a port-forward loses while a process
	// restarts: expected here, and the forwards start again by themselves.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	s, err := FromEnvironment()
	if err != nil {
		return nil, err
	}
	r := &Run{Settings: s}
	if r.Root, err = filepath.Abs(root); err != nil {
		return nil, err
	}
	if r.Cluster, err = kube.Connect(); err != nil {
		return nil, err
	}
	r.Harness = tiltsession.Harness{Tilt: s.Tilt, Root: r.Root, Cluster: r.Cluster}
	fmt.Printf("e2e: kube context %s, namespace %s\n", r.Cluster.Context, s.Namespace)
	return r, nil
}

// Listing reports whether the test binary only lists its tests (go test
// -list): a TestMain then sets up nothing, so the list is a table of
// contents that costs no deploy.
func Listing() bool {
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.list")
	return f != nil && f.Value.String() != ""
}

// Main is the start of a spec package's TestMain: Setup with root, or
// nothing when the binary only lists its tests. It ends the process with
// the error when Setup fails.
func Main(root string) *Run {
	if Listing() {
		return &Run{}
	}
	r, err := Setup(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	return r
}
