// Package dashboards holds the Grafana dashboards as JSON, the single source
// Grafana provisions from. Its tests check that every panel queries the one
// Prometheus datasource with PromQL that parses and names only metrics the
// programs export (testdata/exported-metrics.txt).
package dashboards
