package programs_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// TestListenHosts: with SERVER_LISTEN_HOSTS the server listens on those
// addresses only (what --local uses: loopback and the one address the
// cluster's pods reach this machine at), the same port on each; so it does
// when it is given a socket on each of them (hostrun's supervisor), through
// a hand-over too; a value that is not a list of IP addresses is refused.
func TestListenHosts(t *testing.T) {
	if !loopbackAnswers(t, "127.0.0.2") {
		t.Skip("127.0.0.2 is not a loopback address here (Linux has all of 127/8), so there is no address to be refused on")
	}
	// Two addresses to listen on: both loopbacks, or two of 127/8 where
	// IPv6 is off.
	hosts := []string{"127.0.0.1", "::1"}
	if !loopbackAnswers(t, "::1") {
		hosts[1] = "127.0.0.3"
	}
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, mustRead(t, filepath.Join(binDir, "server")), 0o755); err != nil {
		t.Fatal(err)
	}
	var server *proctest.Process
	var port, metricsPort string
	check := func(when string) {
		t.Helper()
		for _, host := range hosts {
			addr := net.JoinHostPort(host, port)
			if err := proctest.CheckHealth(addr); err != nil {
				t.Errorf("%s: gRPC on %s: %v", when, addr, err)
			}
			if err := proctest.GetMetrics(net.JoinHostPort(host, metricsPort)); err != nil {
				t.Errorf("%s: metrics on %s: %v", when, host, err)
			}
		}
		for _, p := range []string{port, metricsPort} {
			addr := net.JoinHostPort("127.0.0.2", p)
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s: %s accepted a connection: the server listens beyond its hosts", when, addr)
			}
		}
	}
	serves := func(p *proctest.Process) {
		t.Helper()
		server = p
		grpcAddr := server.Addr(t, "grpc", startTimeout)
		_, port, _ = net.SplitHostPort(grpcAddr)
		_, metricsPort, _ = net.SplitHostPort(server.Addr(t, "metrics", startTimeout))
		proctest.Eventually(t, 10*time.Second, "serves", func() bool { return proctest.CheckHealth(grpcAddr) == nil })
	}
	serves(proctest.Start(t, bin, serverEnv("SERVER_LISTEN_HOSTS="+strings.Join(hosts, ","))))
	check("listening itself")
	server.Stop(5 * time.Second)

	on := func(h string) string { return net.JoinHostPort(h, "0") }
	serves(proctest.Start(t, filepath.Join(binDir, "supervisor"), serverEnv(),
		"--listen", "grpc="+on(hosts[0])+","+on(hosts[1]), "--listen", "metrics="+on(hosts[0])+","+on(hosts[1]), "--", bin))
	check("given its sockets")

	before := handovers(server)
	replace(t, bin, filepath.Join(binDir, "server"), "")
	server.Signal(t, syscall.SIGHUP)
	proctest.Eventually(t, 10*time.Second, "the hand-over", func() bool { return handovers(server) > before })
	check("after a hand-over")

	for value, want := range map[string]string{
		"localhost":           `SERVER_LISTEN_HOSTS=localhost: "localhost" is not an IP address`,
		"127.0.0.1,127.0.0.1": "SERVER_LISTEN_HOSTS=127.0.0.1,127.0.0.1: 127.0.0.1 is there twice",
	} {
		bad := proctest.Start(t, bin, serverEnv("SERVER_LISTEN_HOSTS="+value))
		if code, _ := bad.Wait(t, 10*time.Second); code == 0 || !strings.Contains(bad.Output(), want) {
			t.Errorf("SERVER_LISTEN_HOSTS=%s: exit %d, output without %q:\n%s", value, code, want, bad.Output())
		}
	}
}

// loopbackAnswers reports whether a listener on host:0 can be made here.
func loopbackAnswers(t *testing.T, host string) bool {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
