// Package e2e is the table of contents of the checks on a real cluster, the
// one of the current kube context. They carry the build tag e2e, so the
// project's test command, which needs no cluster, leaves them out;
// scripts/e2e runs both spec packages, one after the other, and
// `go test -tags e2e -list . ./e2e/...` (in infra) lists their tests.
//
//   - session: tests that run their own `tilt up` in a copy of the
//     repository and deploy what they need: live updates handing over with
//     no failed call (TestLiveUpdateHandsOver), the programs debugged in
//     their pods through Delve and pprof (TestDebugMode), a program run on
//     this machine by --local and the switches to and from it
//     (TestLocalServer, TestLocalClient, TestLocalSwitchesFromAFreshClone),
//     the environment under the names of other clusters, two developers
//     side by side (TestOtherClusters), the Tilt UI read as a person does
//     (TestTiltUI) and the proto loop (TestProtoLoop).
//   - stack: TestMain deploys the stack once (`tilt ci` when Tilt is
//     installed, else the images pushed and infra/base applied;
//     E2E_DEPLOY=none checks what runs, as scripts/smoke does), then least
//     privilege and Pod Security through the API, the smoke checks, faults
//     under load, traces, the client following the servers, the API server
//     stopped, the log format and the Prometheus Operator.
//   - framework: what the specs share, each package with unit tests of its
//     own: the run's settings; kube, the cluster; echo, the environment
//     seen from outside; tiltsession, a Tilt session and its timed edits.
//
// The benchmarks of the loop under a real Tilt are in infra/bench/loop.
package e2e
