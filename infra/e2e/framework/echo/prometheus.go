package echo

import (
	"testing"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// PrometheusAt returns a client of the Prometheus of pod ns/pod, through a
// port-forward.
func PrometheusAt(t testing.TB, c *kube.Cluster, ns, pod string) promv1.API {
	t.Helper()
	pc, err := api.NewClient(api.Config{Address: "http://" + c.PortForward(t, ns, pod, 9090)})
	if err != nil {
		t.Fatal(err)
	}
	return promv1.NewAPI(pc)
}
