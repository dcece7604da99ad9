// Command prometheusrule writes infra/operator/monitoring/prometheusrule.yaml
// from infra/prometheus/rules.yml, its one source (scripts/generate runs it).
//
//	go -C infra run ./cmd/prometheusrule
package main

import (
	"fmt"
	"os"

	"example.com/grpc-metrics/infra"
)

func main() {
	if err := infra.WritePrometheusRule("."); err != nil {
		fmt.Fprintln(os.Stderr, "prometheusrule:", err)
		os.Exit(1)
	}
}
