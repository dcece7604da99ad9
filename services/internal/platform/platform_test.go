package platform

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap/zaptest"
)

func TestMetricsServer(t *testing.T) {
	reg := NewRegistry("test_program")
	promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "Things."}).Add(3)
	m := NewMetricsServer(zaptest.NewLogger(t), reg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve(lis) }()
	base := "http://" + lis.Addr().String()

	get := func(path, accept string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}

	if code, _, _ := get("/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before SetReady = %d, want 503", code)
	}
	m.SetReady(true)
	if code, _, body := get("/readyz", ""); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz after SetReady = %d %q, want 200 ok", code, body)
	}
	if code, _, _ := get("/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, _, _ := get("/nope", ""); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}

	code, _, body := get("/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"test_things_total 3", "go_goroutines ", "process_cpu_seconds_total ", "test_program_build_info{", "promhttp_metric_handler_requests_total{code=\"200\"}"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, ctype, _ := get("/metrics", "application/openmetrics-text; version=1.0.0"); !strings.HasPrefix(ctype, "application/openmetrics-text") {
		t.Errorf("/metrics with an OpenMetrics Accept header: Content-Type %q, want OpenMetrics", ctype)
	}

	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
}

// TestServe: Serve ends with nil when its context ends (a signal, or
// CLIENT_DURATION's deadline) and with the error of an actor that fails;
// either way every actor is stopped.
func TestServe(t *testing.T) {
	blocking := func() (Actor, chan struct{}) {
		stopped := make(chan struct{})
		return Actor{Run: func() error { <-stopped; return nil }, Stop: func(error) { close(stopped) }}, stopped
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	a, _ := blocking()
	if err := Serve(ctx, a); err != nil {
		t.Errorf("Serve until the deadline = %v, want nil", err)
	}
	failed := errors.New("listener gone")
	a, stopped := blocking()
	if err := Serve(t.Context(), a, Actor{Run: func() error { return failed }, Stop: func(error) {}}); !errors.Is(err, failed) {
		t.Errorf("Serve with a failing actor = %v, want %v", err, failed)
	}
	<-stopped
}
