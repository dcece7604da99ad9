package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// hostAddress is where the cluster's pods reach this machine.
type hostAddress struct {
	// Address is what the EndpointSlices name: the pods connect to it.
	Address string `json:"address"`
	// Listen is the address of this machine to listen on besides loopback,
	// or "" when the connections to Address arrive on loopback.
	Listen string `json:"listen"`
	// How says how Address was found, for the Tilt log.
	How string `json:"how"`
	// Loopback is this machine's loopback addresses (127.0.0.1, and ::1
	// where IPv6 is on), all of which the program listens on: Tilt's
	// forwards of localhost bind each, and one left to a forward while the
	// program holds the other would outlive the program.
	Loopback []string `json:"loopback"`
}

// node is a cluster node, as the API lists it.
type node struct {
	Name        string
	InternalIPs []string
}

// network is a Docker network a node's container is attached to.
type network struct {
	Name, Gateway, IPAddress string
}

// machine is what findAddress asks of this machine and its cluster.
type machine struct {
	goos string
	// nodes lists the cluster's nodes.
	nodes func() ([]node, error)
	// localIPs lists this machine's own addresses.
	localIPs func() ([]net.IP, error)
	// onlyHere returns the interface that holds ip, one of localIPs, and
	// whether only this machine is on it: loopback, or a bridge that this
	// machine made for its containers or VMs (Docker's, libvirt's, a
	// cluster's own), never the LAN or Wi-Fi that other machines share.
	onlyHere func(ip net.IP) (iface string, ok bool)
	// container returns the Docker networks of the container named name,
	// or ok false when this machine's Docker has no such container (or no
	// Docker runs).
	container func(name string) (networks []network, ok bool)
	// resolveIn returns the IPv4 addresses of host as the container
	// resolves it.
	resolveIn func(container, host string) ([]string, error)
}

// errRemote is why --local is refused for a cluster that is not on this
// machine.
var errRemote = errors.New("its pods cannot reach a program on this machine")

// errShared is why --local is refused for a cluster whose pods reach this
// machine only on a network that other machines share.
var errShared = errors.New("other machines of its network would reach the program too")

// findAddress finds the address of this machine that the pods of the
// cluster of context reach, or says why there is none. It never guesses:
//   - a node whose InternalIP is an address of this machine (a single-node
//     cluster run by this machine itself: k3s, microk8s, minikube's none
//     driver): that IP, listened on;
//   - nodes that are containers of this machine's Docker (kind, Docker
//     Desktop's kind clusters): on Linux the gateway of their Docker
//     network, an address of this machine's bridge, listened on; elsewhere
//     (Docker Desktop, OrbStack, colima run containers in a VM)
//     host.docker.internal as the node resolves it, whose connections the
//     VM passes on to this machine's loopback;
//   - anything else (a team's cluster, a cloud's, a VM's that this machine
//     cannot see): errRemote.
func findAddress(m machine, context string) (hostAddress, error) {
	ips, err := m.localIPs()
	if err != nil {
		return hostAddress{}, fmt.Errorf("this machine's addresses: %w", err)
	}
	a, err := findClusterAddress(m, context, ips)
	if err != nil {
		return a, err
	}
	if a.Listen != "" {
		if iface, ok := m.onlyHere(net.ParseIP(a.Listen)); !ok {
			return hostAddress{}, fmt.Errorf("context %s: the pods reach this machine at %s (%s), on %s: %w: "+
				"its gRPC and metrics ports, which ask for no credentials, would be open to them. "+
				"Run the cluster in containers or a VM (kind, k3d, minikube --driver=docker), whose nodes reach this machine on a bridge only it has, "+
				"or leave out --local; -- --debug NAME stops the program on breakpoints in the cluster (docs/DEBUGGING.md)",
				context, a.Listen, a.How, iface, errShared)
		}
	}
	for _, want := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		if slicesContainIP(ips, want) {
			a.Loopback = append(a.Loopback, want.String())
		}
	}
	if len(a.Loopback) == 0 {
		return hostAddress{}, errors.New("this machine has neither 127.0.0.1 nor ::1")
	}
	return a, nil
}

// findClusterAddress is findAddress's Address and Listen, ips this
// machine's addresses.
func findClusterAddress(m machine, context string, ips []net.IP) (hostAddress, error) {
	nodes, err := m.nodes()
	if err != nil {
		return hostAddress{}, fmt.Errorf("the nodes of context %s: %w", context, err)
	}
	if len(nodes) == 0 {
		return hostAddress{}, fmt.Errorf("the cluster of context %s has no nodes yet", context)
	}
	for _, n := range nodes {
		for _, a := range n.InternalIPs {
			if slicesContainIP(ips, net.ParseIP(a)) {
				return hostAddress{Address: a, Listen: a, How: fmt.Sprintf("node %s's InternalIP, an address of this machine", n.Name)}, nil
			}
		}
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
		networks, ok := m.container(n.Name)
		if !ok {
			continue
		}
		if m.goos == "linux" {
			for _, nw := range networks {
				gw := net.ParseIP(nw.Gateway)
				if gw == nil || gw.To4() == nil || !slicesContainIP(ips, gw) {
					continue
				}
				return hostAddress{Address: nw.Gateway, Listen: nw.Gateway,
					How: fmt.Sprintf("the gateway of Docker network %s, which node %s's container is attached to", nw.Name, n.Name)}, nil
			}
			continue
		}
		addrs, err := m.resolveIn(n.Name, "host.docker.internal")
		if err != nil {
			return hostAddress{}, fmt.Errorf("host.docker.internal as node %s resolves it: %w", n.Name, err)
		}
		if len(addrs) > 0 {
			listen := ""
			if slicesContainIP(ips, net.ParseIP(addrs[0])) {
				listen = addrs[0]
			}
			return hostAddress{Address: addrs[0], Listen: listen,
				How: fmt.Sprintf("host.docker.internal as node %s's container resolves it", n.Name)}, nil
		}
	}
	return hostAddress{}, fmt.Errorf("context %s: %w: its nodes (%s) are neither this machine nor containers of this machine's Docker, "+
		"as a team's or a cloud's cluster is. Leave out --local and run the program in the cluster; -- --debug NAME stops it on breakpoints there (docs/DEBUGGING.md)",
		context, errRemote, strings.Join(names, ", "))
}

func slicesContainIP(ips []net.IP, ip net.IP) bool {
	for _, l := range ips {
		if ip != nil && l.Equal(ip) {
			return true
		}
	}
	return false
}
