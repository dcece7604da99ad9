package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// StopAPIServer stops the cluster's kube-apiserver, a process of this
// machine (a node that is this machine, or kind's node container), with
// SIGSTOP, and returns what resumes it (also done when the test ends).
func StopAPIServer(t *testing.T) (resume func()) {
	t.Helper()
	pid := 0
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		if b, err := os.ReadFile(c); err == nil && strings.TrimSpace(string(b)) == "kube-apiserver" {
			pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(c)))
			break
		}
	}
	if pid == 0 {
		t.Skip("no kube-apiserver process on this machine to stop: the cluster's control plane runs elsewhere")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP to kube-apiserver (pid %d): %v", pid, err)
	}
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT to kube-apiserver (pid %d): %v", pid, err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

// WaitAPI waits until the API server answers again.
func (c *Cluster) WaitAPI(t *testing.T) {
	t.Helper()
	if err := Poll(t.Context(), time.Minute, "the API server answering", func(ctx context.Context) (bool, string) {
		_, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		t.Fatal(err)
	}
}

// APIPause is how long the checks stop the API server.
const APIPause = 60 * time.Second
