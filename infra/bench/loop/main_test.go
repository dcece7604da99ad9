//go:build e2e

// Package loop times the edit-and-reload loop on the cluster of the current
// kube context, under a real Tilt (scripts/bench --loop, --loop-local,
// --copy and --loop-example; docs/BENCHMARKS.md). It deploys nothing first:
// each benchmark starts its own `tilt up`, or reads what runs.
package loop

import (
	"os"
	"path/filepath"
	"testing"

	"example.com/grpc-metrics/infra/e2e/framework"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// suite is what TestMain set up for the benchmarks.
var suite *framework.Run

// namespace is the namespace of the environment: echo, or E2E_NAMESPACE.
var namespace string

func TestMain(m *testing.M) {
	suite = framework.Main(filepath.Join("..", "..", ".."))
	namespace = suite.Namespace
	os.Exit(m.Run())
}

// startTilt starts `tilt up` in a copy of the repository with replicas
// server pods and the client at E2E_RATE, and waits until every pod runs
// its build.
func startTilt(b *testing.B, replicas int) *tiltsession.Session {
	b.Helper()
	return suite.Harness.Start(b, tiltsession.DefaultTarget(namespace), replicas, suite.Rate)
}
