//go:build e2e

package session

import (
	"os"
	"path/filepath"
	"testing"

	"example.com/grpc-metrics/infra/e2e/framework"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// suite is what TestMain set up for the tests: the settings, the cluster
// and the Tilt harness.
var suite *framework.Run

// namespace is the namespace of the environment under test: echo, or
// E2E_NAMESPACE (the Tiltfile's --namespace).
var namespace string

// TestMain deploys nothing: each test starts its own `tilt up` in a copy of
// the repository and leaves what it deployed when it ends.
func TestMain(m *testing.M) {
	suite = framework.Main(filepath.Join("..", "..", ".."))
	namespace = suite.Namespace
	os.Exit(m.Run())
}

// session is a Tilt session with the checks' own steps.
type session struct{ *tiltsession.Session }

// startTilt copies the repository, starts `tilt up` in the copy with the
// client calling rate times a second, replicas server pods and the Tiltfile
// options options, and waits until every pod runs its build.
func startTilt(t testing.TB, replicas, rate int, options ...string) *session {
	t.Helper()
	target := tiltsession.DefaultTarget(namespace)
	target.Options = options
	return startTiltAt(t, target, replicas, rate)
}

// startTiltAt is startTilt deploying to target.
func startTiltAt(t testing.TB, target tiltsession.Target, replicas, rate int) *session {
	t.Helper()
	return &session{suite.Harness.Start(t, target, replicas, rate)}
}
