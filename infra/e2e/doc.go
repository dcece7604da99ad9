// Package e2e checks the echo environment on a real cluster, the one of the
// current kube context. Its tests carry the build tag e2e, so the project's
// test command, which needs no cluster, leaves them out; scripts/e2e and
// scripts/smoke run them, and scripts/bench runs BenchmarkLiveUpdate.
//
// TestMain brings the stack up first: `tilt ci` when Tilt is installed,
// otherwise it builds the images, pushes them to the registry the cluster
// advertises and applies infra/base. E2E_DEPLOY=none checks what already
// runs (scripts/smoke). The tests then prove least privilege and Pod Security
// through the API, run the smoke checks through port-forwards, and inject
// faults while the client sends calls, each with the target it must meet.
// With a real Tilt they debug the programs in their pods through Delve and
// pprof (TestDebugMode), and run the environment under the names of other
// clusters, two developers side by side included (TestOtherClusters), and
// read the Tilt UI as a person does: every link opens a page through its
// forward and costs no forward, each action ends green or red with its
// reason (TestTiltUI). TestLogFormat reads console lines from Tilt's dev
// build and JSON from infra/base;
// scripts/bench --loop-example times Tilt's own Go example the way
// BenchmarkLiveUpdate times this project's loop.
package e2e
