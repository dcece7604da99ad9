package endpointslices

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSliceTargetPorts(t *testing.T) {
	all := map[string]endpointSlice{}
	for name, js := range map[string]string{
		"a": slice("a", "20000", "10.244.0.7"),
		"b": slice("b", "20001", "10.244.0.8"),
		// A slice without the port named grpc is not the Service's gRPC.
		"c": `{"metadata":{"name":"c"},"addressType":"IPv4","endpoints":[{"addresses":["10.244.0.9"]}],"ports":[{"name":"metrics","port":9000}]}`,
		// Nor one of FQDNs.
		"d": `{"metadata":{"name":"d"},"addressType":"FQDN","endpoints":[{"addresses":["example.com"]}],"ports":[{"name":"grpc","port":20000}]}`,
	} {
		var s endpointSlice
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		all[name] = s
	}
	for port, want := range map[string][]string{
		"grpc":  {"10.244.0.7:20000", "10.244.0.8:20001"},
		"20001": {"10.244.0.8:20001"},
		"9000":  {"10.244.0.7:9000", "10.244.0.8:9000", "10.244.0.9:9000"},
		"http":  {},
	} {
		var got []string
		for _, a := range (sliceTarget{service: "s", namespace: "n", port: port}).addresses(all, nil) {
			got = append(got, a.Addr)
		}
		if diff := cmp.Diff(want, got, cmpEmpty); diff != "" {
			t.Errorf("port %s (-want +got):\n%s", port, diff)
		}
	}
}

// When no endpoint is ready nor serving while it terminates, the previous
// addresses that are still listed and not terminating are kept (a node
// marked NotReady takes every pod out at once); never one that was not
// called before, nor one that is stopping.
func TestSliceAddressesWhenNoneIsReady(t *testing.T) {
	tests := []struct {
		name      string
		endpoints []string
		previous  []string
		want      []string
	}{
		{"ready ones", []string{"10.0.0.1", "10.0.0.2:notready"}, []string{"10.0.0.2:20000"}, []string{"10.0.0.1:20000"}},
		{"terminating ones still serving", []string{"10.0.0.1:terminating", "10.0.0.2:notready"}, []string{"10.0.0.2:20000"}, []string{"10.0.0.1:20000"}},
		{"every one not ready: the previous kept", []string{"10.0.0.1:notready", "10.0.0.2:notready", "10.0.0.3:notready"},
			[]string{"10.0.0.1:20000", "10.0.0.2:20000"}, []string{"10.0.0.1:20000", "10.0.0.2:20000"}},
		{"none of the previous listed", []string{"10.0.0.3:notready"}, []string{"10.0.0.1:20000"}, nil},
		{"a previous one stopping, not serving", []string{"10.0.0.1:stopped"}, []string{"10.0.0.1:20000"}, nil},
		{"no previous", []string{"10.0.0.1:notready"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s endpointSlice
			if err := json.Unmarshal([]byte(slice("a", "20000", tt.endpoints...)), &s); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range (sliceTarget{service: "s", namespace: "n", port: "grpc"}).addresses(map[string]endpointSlice{"a": s}, tt.previous) {
				got = append(got, a.Addr)
			}
			if diff := cmp.Diff(tt.want, got, cmpEmpty); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

var cmpEmpty = cmp.FilterValues(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 }, cmp.Ignore())

func TestParseSliceTarget(t *testing.T) {
	for endpoint, want := range map[string]string{
		"server-service.echo:grpc":  "server-service echo grpc",
		"server-service:20000":      "server-service own 20000",
		"server-service.echo":       `"server-service.echo": want service.namespace:port (the port by number or by the Service port's name)`,
		"server-service.echo.svc:1": `"server-service.echo.svc:1": want service.namespace:port, such as server-service.echo:grpc`,
		".echo:grpc":                `".echo:grpc": want service.namespace:port, such as server-service.echo:grpc`,
	} {
		got := ""
		if tg, err := parseSliceTarget(endpoint, "own"); err != nil {
			got = err.Error()
		} else {
			got = tg.service + " " + tg.namespace + " " + tg.port
		}
		if got != want {
			t.Errorf("%s: %s, want %s", endpoint, got, want)
		}
	}
}
