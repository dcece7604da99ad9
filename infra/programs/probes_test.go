package programs_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/proctest"
)

// TestProbesAskWhatTheServerAnswers asks the real server the gRPC health
// services that the manifests' probes ask: both SERVING while it serves;
// from the first moment of its shutdown the readiness probe's NOT_SERVING
// (the pod leaves the Service) and the liveness probe's still SERVING (a
// draining process is not killed).
func TestProbesAskWhatTheServerAnswers(t *testing.T) {
	tr, err := infra.Build(filepath.Join("..", "app"))
	if err != nil {
		t.Fatal(err)
	}
	d := tr.Deployments["server"]
	if d == nil || len(d.Spec.Template.Spec.Containers) == 0 {
		t.Fatal("no server Deployment in infra/app")
	}
	c := d.Spec.Template.Spec.Containers[0]
	service := func(what string, p *corev1.Probe) string {
		if p == nil || p.GRPC == nil {
			t.Fatalf("the server's %s probe is not a gRPC probe", what)
		}
		if p.GRPC.Service == nil {
			return ""
		}
		return *p.GRPC.Service
	}
	readiness, liveness := service("readiness", c.ReadinessProbe), service("liveness", c.LivenessProbe)

	server := start(t, "server", serverEnv("SERVER_SHUTDOWN_DELAY=1m")...)
	conn, err := grpc.NewClient(server.Addr(t, "grpc", startTimeout), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	status := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health Check(%q): %v", svc, err)
		}
		return r.GetStatus()
	}
	for what, svc := range map[string]string{"readiness": readiness, "liveness": liveness} {
		if got := status(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("serving: the %s probe's service %q is %v, want SERVING", what, svc, got)
		}
	}
	server.Signal(t, syscall.SIGTERM)
	proctest.Eventually(t, 5*time.Second, "the server in its shutdown delay", func() bool {
		return len(server.Events("shutdown_delay")) > 0
	})
	if got := status(readiness); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("shutting down: the readiness probe's service %q is %v, want NOT_SERVING", readiness, got)
	}
	if got := status(liveness); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("shutting down: the liveness probe's service %q is %v, want SERVING", liveness, got)
	}
}
