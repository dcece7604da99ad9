package main

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
)

// fakeMachine is a machine with the addresses local: "IP" is on a bridge
// (or loopback), "IP=IFACE" on a network other machines share.
func fakeMachine(goos string, nodes []node, local []string, containers map[string][]network, resolved []string) machine {
	shared := map[string]string{}
	for i, a := range local {
		if ip, iface, ok := strings.Cut(a, "="); ok {
			local[i], shared[ip] = ip, iface
		}
	}
	return machine{
		goos:  goos,
		nodes: func() ([]node, error) { return nodes, nil },
		localIPs: func() ([]net.IP, error) {
			var ips []net.IP
			for _, a := range local {
				ips = append(ips, net.ParseIP(a))
			}
			return ips, nil
		},
		onlyHere: func(ip net.IP) (string, bool) {
			if iface, ok := shared[ip.String()]; ok {
				return iface, false
			}
			return "br0", true
		},
		container: func(name string) ([]network, bool) {
			n, ok := containers[name]
			return n, ok
		},
		resolveIn: func(container, host string) ([]string, error) {
			if host != "host.docker.internal" {
				return nil, errors.New("unexpected host " + host)
			}
			return resolved, nil
		},
	}
}

func TestFindAddress(t *testing.T) {
	kindNode := []node{{Name: "grpc-metrics-control-plane", InternalIPs: []string{"172.18.0.2"}}}
	kindNet := map[string][]network{"grpc-metrics-control-plane": {{Name: "kind", Gateway: "172.18.0.1", IPAddress: "172.18.0.2"}}}
	tests := []struct {
		name string
		m    machine
		want hostAddress
	}{
		{
			"a single node that is this machine",
			fakeMachine("linux", []node{{Name: "vm", InternalIPs: []string{"10.244.0.1"}}}, []string{"127.0.0.1", "10.0.2.15", "10.244.0.1"}, nil, nil),
			hostAddress{Address: "10.244.0.1", Listen: "10.244.0.1", How: "node vm's InternalIP, an address of this machine", Loopback: []string{"127.0.0.1"}},
		},
		{
			"kind on Linux: the Docker network's gateway",
			fakeMachine("linux", kindNode, []string{"127.0.0.1", "::1", "172.18.0.1"}, kindNet, nil),
			hostAddress{Address: "172.18.0.1", Listen: "172.18.0.1", How: "the gateway of Docker network kind, which node grpc-metrics-control-plane's container is attached to", Loopback: []string{"127.0.0.1", "::1"}},
		},
		{
			"kind on macOS: host.docker.internal, reached on loopback",
			fakeMachine("darwin", kindNode, []string{"::1", "127.0.0.1", "192.168.1.20"}, kindNet, []string{"192.168.65.254"}),
			hostAddress{Address: "192.168.65.254", Listen: "", How: "host.docker.internal as node grpc-metrics-control-plane's container resolves it", Loopback: []string{"127.0.0.1", "::1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findAddress(tt.m, "ctx")
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("findAddress: %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestFindAddressRefusesRemoteClusters(t *testing.T) {
	for name, m := range map[string]machine{
		"nodes elsewhere":                       fakeMachine("linux", []node{{Name: "gke-pool-1", InternalIPs: []string{"10.128.0.4"}}}, []string{"127.0.0.1", "192.168.1.20"}, nil, nil),
		"a container whose gateway is not here": fakeMachine("linux", []node{{Name: "n1", InternalIPs: []string{"172.18.0.2"}}}, []string{"127.0.0.1"}, map[string][]network{"n1": {{Name: "kind", Gateway: "172.18.0.1"}}}, nil),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := findAddress(m, "team")
			if !errors.Is(err, errRemote) || !strings.Contains(err.Error(), "Leave out --local") || !strings.Contains(err.Error(), "--debug") {
				t.Errorf("findAddress: %v; want errRemote saying what to use instead", err)
			}
		})
	}
	if _, err := findAddress(fakeMachine("linux", nil, nil, nil, nil), "empty"); err == nil || !strings.Contains(err.Error(), "has no nodes yet") {
		t.Errorf("no nodes: %v", err)
	}
}

// A node whose InternalIP is this machine's LAN or Wi-Fi address (k3s,
// microk8s, minikube --driver=none) would have the program listen where the
// whole network reaches it: refused, saying what to use instead.
func TestFindAddressRefusesSharedNetworks(t *testing.T) {
	m := fakeMachine("linux", []node{{Name: "laptop", InternalIPs: []string{"192.168.1.20"}}}, []string{"127.0.0.1", "192.168.1.20=wlan0"}, nil, nil)
	_, err := findAddress(m, "k3s")
	if !errors.Is(err, errShared) {
		t.Fatalf("findAddress: %v; want errShared", err)
	}
	for _, want := range []string{"192.168.1.20", "wlan0", "kind, k3d, minikube --driver=docker", "leave out --local"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
}

func TestParseSliceSpec(t *testing.T) {
	if got, err := parseSliceSpec("server-service=grpc:20000"); err != nil || got != (sliceSpec{service: "server-service", portName: "grpc", port: 20000}) {
		t.Errorf("parseSliceSpec: %+v, %v", got, err)
	}
	for _, bad := range []string{"server-service", "server-service=grpc", "=grpc:1", "s=:1", "s=grpc:0", "s=grpc:65536", "s=grpc:x"} {
		if _, err := parseSliceSpec(bad); err == nil || !strings.Contains(err.Error(), "want SERVICE=PORTNAME:PORT") {
			t.Errorf("parseSliceSpec(%q): %v", bad, err)
		}
	}
}
