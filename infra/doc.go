// Package infra holds the Kubernetes manifests of the echo environment as
// kustomize trees: app (the namespace, the server and the client), base (app
// with its own Prometheus and Grafana; `kubectl apply -k infra` deploys it),
// dev (the Tilt build, whose live-updated containers get a writable root
// filesystem) and operator (app for a cluster that runs the Prometheus
// Operator, with ServiceMonitors, a PrometheusRule and the dashboards). Its
// tests build every tree and check it against the rules the manifests must
// keep; its functions build a tree (Build), evaluate Pod Security and write
// the PrometheusRule.
//
// The module is the project's checks: besides the manifests' tests, the
// dashboards' against a real Prometheus (dashboards, promcheck), the
// programs run as processes (programs, with the helper proctest), the
// cluster checks (e2e: a framework, then specs behind the build tag e2e)
// and the bench (bench; the loop's, behind the tag, in bench/loop).
package infra
