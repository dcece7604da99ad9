package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// realMachine asks kubectl (of context) and docker.
func realMachine(goos, kubectl, context string) machine {
	return machine{
		goos:      goos,
		nodes:     func() ([]node, error) { return kubectlNodes(kubectl, context) },
		localIPs:  interfaceIPs,
		onlyHere:  func(ip net.IP) (string, bool) { return onlyHere(goos, ip) },
		container: dockerNetworks,
		resolveIn: resolveInContainer,
	}
}

// kubectlNodes is machine.nodes: the nodes of context, with their
// InternalIPs, as kubectl lists them.
func kubectlNodes(kubectl, context string) ([]node, error) {
	out, err := command(nil, kubectl, "--context", context, "--request-timeout", requestTimeout.String(), "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Addresses []struct {
					Type    string `json:"type"`
					Address string `json:"address"`
				} `json:"addresses"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %w", err)
	}
	var nodes []node
	for _, it := range list.Items {
		n := node{Name: it.Metadata.Name}
		for _, a := range it.Status.Addresses {
			if a.Type == "InternalIP" {
				n.InternalIPs = append(n.InternalIPs, a.Address)
			}
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// interfaceIPs is machine.localIPs: the addresses of this machine's
// interfaces.
func interfaceIPs() ([]net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips, nil
}

// dockerNetworks is machine.container: the Docker networks of the
// container name, as docker inspect reports them.
func dockerNetworks(name string) ([]network, bool) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, false
	}
	out, err := command(nil, "docker", "inspect", "--type", "container", "--format", "{{json .NetworkSettings.Networks}}", name)
	if err != nil {
		return nil, false
	}
	var byName map[string]struct {
		Gateway   string `json:"Gateway"`
		IPAddress string `json:"IPAddress"`
	}
	if json.Unmarshal(out, &byName) != nil {
		return nil, false
	}
	var nets []network
	for n, v := range byName {
		nets = append(nets, network{Name: n, Gateway: v.Gateway, IPAddress: v.IPAddress})
	}
	return nets, true
}

// resolveInContainer is machine.resolveIn: the IPv4 addresses of host as
// getent in the container finds them.
func resolveInContainer(container, host string) ([]string, error) {
	out, err := command(nil, "docker", "exec", container, "getent", "ahostsv4", host)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && net.ParseIP(f[0]) != nil && !slices.Contains(addrs, f[0]) {
			addrs = append(addrs, f[0])
		}
	}
	return addrs, nil
}

// onlyHere is machine.onlyHere for this machine, whose GOOS is goos.
func onlyHere(goos string, ip net.IP) (string, bool) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", false
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return ifc.Name, ifc.Flags&net.FlagLoopback != 0 || isBridge(goos, ifc.Name)
			}
		}
	}
	return "", false
}

// isBridge reports whether the interface name is a bridge of this machine:
// on Linux one that the kernel says is a bridge (docker0, br-*, virbr0,
// cni0...); on macOS the bridges and host-only networks that its
// hypervisors make (bridge100 of vmnet, vmnet*, vboxnet*).
func isBridge(goos, name string) bool {
	if goos == "linux" {
		_, err := os.Stat(filepath.Join("/sys/class/net", name, "bridge"))
		return err == nil
	}
	for _, prefix := range []string{"bridge", "vmnet", "vboxnet"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// command runs name with args and stdin and returns its standard output,
// or an error with its standard error.
func command(stdin []byte, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), msg)
	}
	return stdout.Bytes(), nil
}
