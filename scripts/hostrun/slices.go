package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// managedBy marks the EndpointSlices hostrun makes (the EndpointSlice
// controller leaves slices of other managers alone).
const managedBy = "hostrun.grpc-metrics.example.com"

// sliceSpec is a Service whose calls go to this machine, on one port: from
// --slice SERVICE=PORTNAME:PORT.
type sliceSpec struct {
	service, portName string
	port              int
}

func parseSliceSpec(s string) (sliceSpec, error) {
	service, port, ok := strings.Cut(s, "=")
	name, number, ok2 := strings.Cut(port, ":")
	n, err := strconv.Atoi(number)
	if !ok || !ok2 || service == "" || name == "" || err != nil || n < 1 || n > 65535 {
		return sliceSpec{}, fmt.Errorf("--slice %q: want SERVICE=PORTNAME:PORT, such as server-service=grpc:20000", s)
	}
	return sliceSpec{service: service, portName: name, port: n}, nil
}

// sliceName is the name of the slice that sends spec's Service here.
func (s sliceSpec) sliceName() string { return s.service + "-hostrun" }

// cluster is the namespace that the slices are made in, through kubectl.
type cluster struct {
	kubectl, context, namespace string
}

// flags defines --context, --namespace and --kubectl in fs.
func (c *cluster) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.context, "context", "", "kube context of the cluster")
	fs.StringVar(&c.namespace, "namespace", "", "namespace of the Services")
	fs.StringVar(&c.kubectl, "kubectl", "kubectl", "kubectl to change the cluster with")
}

// requestTimeout bounds each of kubectl's requests: an API server that
// does not answer must not hold a stop past Tilt's 30s.
const requestTimeout = 5 * time.Second

func (c cluster) run(stdin []byte, args ...string) ([]byte, error) {
	return command(stdin, c.kubectl, append([]string{"--context", c.context, "--namespace", c.namespace, "--request-timeout", requestTimeout.String()}, args...)...)
}

// errNoService is a Service that does not exist (yet, or any more).
var errNoService = errors.New("no such Service")

// serviceUID returns the UID of the Service, the slices' owner: they go
// with it (tilt down deletes the Services, the garbage collector the
// slices).
func (c cluster) serviceUID(name string) (string, error) {
	out, err := c.run(nil, "get", "service", name, "--ignore-not-found", "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return "", err
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%s: %w", name, errNoService)
	}
	return string(out), nil
}

// slice is the EndpointSlice that names address for spec's Service.
func slice(spec sliceSpec, uid, address string) map[string]any {
	family := "IPv4"
	if ip := net.ParseIP(address); ip != nil && ip.To4() == nil {
		family = "IPv6"
	}
	return map[string]any{
		"apiVersion": "discovery.k8s.io/v1",
		"kind":       "EndpointSlice",
		"metadata": map[string]any{
			"name": spec.sliceName(),
			"labels": map[string]string{
				"kubernetes.io/service-name":             spec.service,
				"endpointslice.kubernetes.io/managed-by": managedBy,
			},
			"ownerReferences": []map[string]any{{
				"apiVersion": "v1", "kind": "Service", "name": spec.service, "uid": uid,
			}},
		},
		"addressType": family,
		"endpoints": []map[string]any{{
			"addresses":  []string{address},
			"conditions": map[string]bool{"ready": true, "serving": true, "terminating": false},
		}},
		"ports": []map[string]any{{"name": spec.portName, "port": spec.port, "protocol": "TCP"}},
	}
}

// publish makes (or updates) the slices that send the Services' calls to
// address. It returns errNoService while a Service is not there yet.
func (c cluster) publish(specs []sliceSpec, address string) error {
	var items []any
	for _, s := range specs {
		uid, err := c.serviceUID(s.service)
		if err != nil {
			return err
		}
		items = append(items, slice(s, uid, address))
	}
	doc, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	_, err = c.run(doc, "apply", "-f", "-")
	return err
}

// current reports whether each slice is there and owned by its Service as
// it is now. A Service deleted and made again (disabled and enabled in
// Tilt) has a new UID: the garbage collector deletes the slices owned by
// the old one, and every call would fail until they are made again. It
// returns errNoService while a Service is gone.
func (c cluster) current(specs []sliceSpec) (bool, error) {
	args := []string{"get"}
	for _, s := range specs {
		args = append(args, "service/"+s.service, "endpointslice/"+s.sliceName())
	}
	out, err := c.run(nil, append(args, "--ignore-not-found", "-o", "json")...)
	if err != nil {
		return false, err
	}
	// Nothing found prints nothing; one object, itself; more, a List.
	type object struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name   string `json:"name"`
			UID    string `json:"uid"`
			Owners []struct {
				UID string `json:"uid"`
			} `json:"ownerReferences"`
		} `json:"metadata"`
		Items []object `json:"items"`
	}
	var got object
	if len(strings.TrimSpace(string(out))) > 0 {
		if err := json.Unmarshal(out, &got); err != nil {
			return false, fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
		}
	}
	items := got.Items
	if got.Kind != "List" {
		items = []object{got}
	}
	services, owners := map[string]string{}, map[string]string{}
	for _, it := range items {
		switch it.Kind {
		case "Service":
			services[it.Metadata.Name] = it.Metadata.UID
		case "EndpointSlice":
			if len(it.Metadata.Owners) > 0 {
				owners[it.Metadata.Name] = it.Metadata.Owners[0].UID
			}
		}
	}
	for _, s := range specs {
		uid := services[s.service]
		if uid == "" {
			return false, fmt.Errorf("%s: %w", s.service, errNoService)
		}
		if owners[s.sliceName()] != uid {
			return false, nil
		}
	}
	return true, nil
}

// withdraw deletes the slices: the Services' calls no longer come here. It
// returns kubectl's lines, one per slice deleted.
func (c cluster) withdraw(specs []sliceSpec) ([]byte, error) {
	args := []string{"delete", "endpointslice", "--ignore-not-found", "--wait=false"}
	for _, s := range specs {
		args = append(args, s.sliceName())
	}
	return c.run(nil, args...)
}

// servedElsewhere reports whether each Service has a ready endpoint in a
// slice that is not hostrun's (its pods are back), or is gone (tilt down):
// then this machine may stop serving it.
func (c cluster) servedElsewhere(specs []sliceSpec) (bool, string) {
	for _, s := range specs {
		if _, err := c.serviceUID(s.service); errors.Is(err, errNoService) {
			continue
		} else if err != nil {
			return false, err.Error()
		}
		out, err := c.run(nil, "get", "endpointslices", "-l", "kubernetes.io/service-name="+s.service+",endpointslice.kubernetes.io/managed-by!="+managedBy, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		if !hasReadyEndpoint(out) {
			return false, "no ready pod of " + s.service + " yet"
		}
	}
	return true, ""
}

// hasReadyEndpoint reports whether the EndpointSlice list has an endpoint
// that is ready (an unknown condition counts as ready, as the API asks).
func hasReadyEndpoint(list []byte) bool {
	var l struct {
		Items []struct {
			Endpoints []struct {
				Conditions struct {
					Ready *bool `json:"ready"`
				} `json:"conditions"`
			} `json:"endpoints"`
		} `json:"items"`
	}
	if json.Unmarshal(list, &l) != nil {
		return false
	}
	for _, it := range l.Items {
		for _, e := range it.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				return true
			}
		}
	}
	return false
}
