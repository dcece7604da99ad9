// Package dashboards reads the Grafana dashboards of the repository's
// dashboards/ directory (JSON, the single source Grafana provisions from):
// Load, the variables' expansion
// (Expand, MultiValue) and the rules files the panels sit beside
// (LoadRules). Its tests check that every panel queries a Prometheus
// datasource with PromQL that parses; and, unless -short, against a real
// Prometheus scraping the real binaries, that every panel query and every
// rule returns data and names only series Prometheus has from the programs
// or from the recording rules in infra/prometheus/rules.yml
// (docs/OBSERVABILITY.md). Package promcheck runs those checks
// against any Prometheus.
package dashboards
