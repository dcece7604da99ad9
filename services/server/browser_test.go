package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestBrowserOnTheGRPCPort is a browser opening the gRPC port, as the Tilt
// UI's link to it does: an HTTP/1 request far longer than the 24 bytes of
// the HTTP/2 preface that grpc-go reads before it gives up. It gets a page
// naming grpcurl and the address it used, then a clean end of the
// connection, not a reset (which a port-forward takes for the loss of its
// tunnel); gRPC goes on serving on the same port. The request comes in two
// writes, the first shorter than a method, as TCP may deliver it.
func TestBrowserOnTheGRPCPort(t *testing.T) {
	noLeaks(t)
	s := startServe(t, testConfig(), zaptest.NewLogger(t))
	defer s.wait(t)
	defer s.stop()

	for _, first := range []string{"GET / HTTP/1.1\r\n", "GE"} {
		c, err := net.Dial("tcp", s.grpc)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET / HTTP/1.1\r\nHost: localhost:20000\r\nUser-Agent: " + strings.Repeat("x", 4000) + "\r\nAccept: text/html\r\n\r\n"
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := io.WriteString(c, req[len(first):]); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("first write %q: read the answer: %v", first, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("first write %q: read the page: %v", first, err)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "grpcurl -plaintext localhost:20000 list") {
			t.Errorf("first write %q: %s\n%s\nwant 200 and a page naming grpcurl at localhost:20000", first, resp.Status, body)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
			t.Errorf("first write %q: after the page: %q, %v; want the end of the connection (EOF), not a reset", first, rest, err)
		}
		c.Close()
	}

	if got := healthStatus(testContext(t), healthpb.NewHealthClient(dial(t, s.grpc))); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the browsers: %v, want SERVING", got)
	}
}

// TestNotHTTPOnTheGRPCPort: bytes that are neither HTTP/1 nor HTTP/2 are
// grpc-go's to refuse, as without the browser's page: the connection is
// closed, with no page (grpc-go's SETTINGS frame, perhaps), and gRPC goes on
// serving.
func TestNotHTTPOnTheGRPCPort(t *testing.T) {
	noLeaks(t)
	s := startServe(t, testConfig(), zaptest.NewLogger(t))
	defer s.wait(t)
	defer s.stop()

	c, err := net.Dial("tcp", s.grpc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "hello, are you there? this is not a protocol\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if strings.HasPrefix(string(got), "HTTP/") {
		t.Errorf("answer to noise: %q, want no page", got)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("the noise's connection was left open: %v", err)
	}

	if got := healthStatus(testContext(t), healthpb.NewHealthClient(dial(t, s.grpc))); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after the noise: %v, want SERVING", got)
	}
}
