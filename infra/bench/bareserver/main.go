// Command bareserver serves foo.Foo with grpc-go and nothing else: no
// interceptor, no metric, no log line per call. It is the baseline of the
// load benchmark (scripts/bench). It also serves grpc.health.v1, SERVING from
// the start, so the benchmark can wait for it as it waits for the server.
//
// Usage: bareserver [-addr 127.0.0.1:20100]   (port 0: any free port, logged)
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/grpc-metrics/proto/foopb"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:20100", "TCP address of the gRPC listener")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

// echo replies with the name it was sent.
type echo struct {
	foopb.UnimplementedFooServer
}

var _ foopb.FooServer = echo{}

func (echo) Echo(_ context.Context, req *foopb.EchoRequest) (*foopb.EchoReply, error) {
	return &foopb.EchoReply{Message: req.GetName()}, nil
}

// run serves on addr until ctx ends, then stops at once.
func run(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The line the benchmark reads the address from, as the programs log it.
	fmt.Fprintf(os.Stderr, "{\"msg\":\"listening\",\"grpc\":%q}\n", lis.Addr().String())
	s := grpc.NewServer()
	foopb.RegisterFooServer(s, echo{})
	healthpb.RegisterHealthServer(s, health.NewServer()) // "" is SERVING
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	if err := s.Serve(lis); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
