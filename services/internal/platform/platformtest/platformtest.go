// Package platformtest holds what the programs' tests share: a gRPC
// connection to a server in the test process (bufconn), and the check of a
// configuration's errors.
package platformtest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"example.com/grpc-metrics/services/internal/platform"
)

// Dial serves s over bufconn until the test ends and returns a connection
// to it, made with opts besides the in-process dialer.
func Dial(t testing.TB, s *grpc.Server, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ConfigCase is an environment that a configuration must refuse, and the
// error it must give.
type ConfigCase struct {
	Name    string
	Env     map[string]string
	WantErr string
}

// ConfigErrors loads a new configuration from each case's environment
// (PREFIX_* variables) and checks that it fails with exactly the error the
// case wants.
func ConfigErrors(t *testing.T, prefix string, newConfig func() platform.Config, cases []ConfigCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			for k, v := range tt.Env {
				t.Setenv(k, v)
			}
			err := platform.LoadConfig(prefix, newConfig(), nil, nil)
			if err == nil {
				t.Fatalf("LoadConfig succeeded with %v, want error %q", tt.Env, tt.WantErr)
			}
			if got := err.Error(); got != tt.WantErr {
				t.Errorf("LoadConfig error:\n got %s\nwant %s", got, tt.WantErr)
			}
		})
	}
}
