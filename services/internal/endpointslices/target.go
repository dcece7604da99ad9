package endpointslices

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"
)

// The EndpointSlice fields the resolver reads (discovery.k8s.io/v1).
type endpointSlice struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	AddressType string `json:"addressType"`
	Endpoints   []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready       *bool `json:"ready"`
			Serving     *bool `json:"serving"`
			Terminating *bool `json:"terminating"`
		} `json:"conditions"`
	} `json:"endpoints"`
	Ports []struct {
		Name *string `json:"name"`
		Port *int32  `json:"port"`
	} `json:"ports"`
}

// sliceTarget is what kubernetes:///service.namespace:port names: the
// Service, its namespace and its port, by name or number.
type sliceTarget struct {
	service, namespace, port string
}

// parseSliceTarget reads the endpoint of a kubernetes:/// target. The
// namespace may be left out (the pod's own); the port may not.
func parseSliceTarget(endpoint, ownNamespace string) (sliceTarget, error) {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || port == "" {
		return sliceTarget{}, fmt.Errorf("%q: want service.namespace:port (the port by number or by the Service port's name)", endpoint)
	}
	service, namespace, _ := strings.Cut(host, ".")
	if namespace == "" {
		namespace = ownNamespace
	}
	if service == "" || namespace == "" || strings.Contains(namespace, ".") {
		return sliceTarget{}, fmt.Errorf("%q: want service.namespace:port, such as server-service.echo:grpc", endpoint)
	}
	return sliceTarget{service: service, namespace: namespace, port: port}, nil
}

// portOf is the port of slice s that the target names, by name or number.
func (t sliceTarget) portOf(s endpointSlice) (int32, bool) {
	n, err := strconv.ParseInt(t.port, 10, 32)
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if (err == nil && int64(*p.Port) == n) || (err != nil && p.Name != nil && *p.Name == t.port) {
			return *p.Port, true
		}
	}
	return 0, false
}

// addresses is where the calls go: every ready endpoint of every slice, on
// the target's port; when none is ready, those still serving while they
// terminate (as kube-proxy does), so that calls go on while the only pods
// are stopping and their replacement (a pod, or this machine) is not yet
// in a slice. When neither is left, those of previous (the last addresses)
// that are still listed: every endpoint not ready at once is what a node
// marked NotReady does to its pods (the controller lost touch with the
// node after an API server outage, and the kubelet has not reported since),
// and a pod that served a moment ago most likely still does; calls that
// would all fail without it may then succeed (Envoy's panic routing does
// the same).
func (t sliceTarget) addresses(all map[string]endpointSlice, previous []string) []resolver.Address {
	var ready, terminating, listed []string
	for _, s := range all {
		port, ok := t.portOf(s)
		if !ok || (s.AddressType != "IPv4" && s.AddressType != "IPv6") {
			continue
		}
		for _, e := range s.Endpoints {
			c := e.Conditions
			// An unknown condition counts as true, as the API asks.
			isReady := c.Ready == nil || *c.Ready
			serving := c.Serving == nil || *c.Serving
			stopping := c.Terminating != nil && *c.Terminating
			for _, a := range e.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
				switch {
				case isReady:
					ready = append(ready, addr)
				case serving && stopping:
					terminating = append(terminating, addr)
				case !stopping && slices.Contains(previous, addr):
					listed = append(listed, addr)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = terminating
	}
	if len(ready) == 0 {
		ready = listed
	}
	slices.Sort(ready)
	ready = slices.Compact(ready)
	out := make([]resolver.Address, len(ready))
	for i, a := range ready {
		out[i] = resolver.Address{Addr: a}
	}
	return out
}
