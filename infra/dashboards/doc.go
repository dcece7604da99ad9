// Package dashboards reads the Grafana dashboards of the repository's
// dashboards/ directory (JSON, the single source Grafana provisions from):
// Load, the variables' expansion
// (Expand, MultiValue) and the rules files the panels sit beside
// (LoadRules). Its tests check that every panel queries a Prometheus
// datasource with PromQL that parses and names only metrics the programs
// export (testdata/exported-metrics.txt) or the recording rules in
// infra/prometheus/rules.yml write; and, unless -short, that every panel
// query and every rule returns data from a real Prometheus scraping the real
// binaries (docs/OBSERVABILITY.md). Package promcheck runs those checks
// against any Prometheus.
package dashboards
