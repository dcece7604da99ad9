package proctest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Poller opens a new connection to each address every interval, as a person
// at a terminal does through Tilt's forwards: a gRPC health check on grpc,
// a GET of /metrics on each metrics address. It counts what failed.
type Poller struct {
	ok, failed atomic.Int64 // connections that worked, that failed
	mu         sync.Mutex
	failures   []string
}

func (p *Poller) Run(ctx context.Context, interval time.Duration, grpcAddr string, metricsAddrs ...string) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if grpcAddr != "" {
			p.count(CheckHealth(grpcAddr))
		}
		for _, addr := range metricsAddrs {
			p.count(GetMetrics(addr))
		}
	}
}

func (p *Poller) count(err error) {
	if err == nil {
		p.ok.Add(1)
		return
	}
	p.failed.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures = append(p.failures, time.Now().Format("15:04:05.000 ")+err.Error())
}

// CheckHealth makes one health check on a connection of its own, with the
// 2s deadline a person's grpcurl would have, failing fast on a refusal.
func CheckHealth(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health check of %s: %w", addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check of %s: %v", addr, resp.GetStatus())
	}
	return nil
}

// GetMetrics GETs /metrics on a connection of its own.
func GetMetrics(addr string) error { return GetOK("http://" + addr + "/metrics") }

// GetOK GETs url on a connection of its own, within 2s, and wants 200.
func GetOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// OK is how many connections worked so far.
func (p *Poller) OK() int64 { return p.ok.Load() }

// Failed is how many connections failed so far.
func (p *Poller) Failed() int64 { return p.failed.Load() }

// Failures returns each failure so far, with its time.
func (p *Poller) Failures() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.failures)
}
