package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// serverManifests is infra/dev's server, its Services, its tracing
// settings and Jaeger's Service, as Tilt deploys them (JSON).
const serverManifests = `[
{"kind":"ConfigMap","metadata":{"name":"tracing-7h2k"},"data":{"OTEL_EXPORTER_OTLP_ENDPOINT":"http://jaeger:4318","OTEL_TRACES_SAMPLER":"parentbased_always_on"}},
{"kind":"Deployment","metadata":{"name":"server","labels":{"app":"server"}},"spec":{"template":{"spec":{"containers":[{
  "envFrom":[{"configMapRef":{"name":"tracing-7h2k"}},{"configMapRef":{"name":"extra","optional":true}}],
  "env":[
    {"name":"POD_NAME","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},
    {"name":"POD_NAMESPACE","valueFrom":{"fieldRef":{"fieldPath":"metadata.namespace"}}},
    {"name":"OTEL_RESOURCE_ATTRIBUTES","value":"k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"},
    {"name":"SERVER_GRPC_PORT","value":"20000"},
    {"name":"SERVER_SHUTDOWN_TIMEOUT","value":"10s"}],
  "ports":[{"name":"grpc","containerPort":20000},{"name":"metrics","containerPort":9000}],
  "readinessProbe":{"grpc":{"port":20000}}}]}}}},
{"kind":"Service","metadata":{"name":"server-service","labels":{"app":"server"}},"spec":{"ports":[{"name":"grpc","port":20000,"targetPort":"grpc"}]}},
{"kind":"Service","metadata":{"name":"server-metrics-service","labels":{"app":"server"}},"spec":{"ports":[{"name":"metrics","port":9000,"targetPort":9000}]}},
{"kind":"Service","metadata":{"name":"jaeger","labels":{"app":"jaeger"}},"spec":{"ports":[{"name":"otlp-http","port":4318,"targetPort":"otlp-http"}]}},
{"kind":"Deployment","metadata":{"name":"jaeger","labels":{"app":"jaeger"}},"spec":{"template":{"spec":{"containers":[{
  "ports":[{"name":"otlp-http","containerPort":14318}]}]}}}}
]`

func decodeManifests(t *testing.T, s string) manifests {
	t.Helper()
	var m manifests
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func serverPlan() *planConfig {
	return &planConfig{
		cluster: cluster{context: "kind-x", namespace: "echo"},
		program: "server", dir: "build/local",
		ports:  map[string]int{"grpc": 20100, "metrics": 9100},
		offset: 100,
		set:    map[string]string{},
	}
}

var kindAddress = hostAddress{Address: "172.18.0.1", Listen: "172.18.0.1", How: "the gateway", Loopback: []string{"127.0.0.1", "::1"}}

// An httpGet readiness probe is asked where the program listens here.
func TestDeriveReadiness(t *testing.T) {
	s := strings.Replace(serverManifests, `"readinessProbe":{"grpc":{"port":20000}}`, `"readinessProbe":{"httpGet":{"path":"/ready","port":20000}}`, 1)
	got, err := serverPlan().derive(decodeManifests(t, s), kindAddress)
	if err != nil || !strings.Contains(strings.Join(got.Args, " "), "--ready http://127.0.0.1:20100/ready ") {
		t.Errorf("derive: %v, %v", got, err)
	}
}

// The plan of the server: its pod's environment with this machine's ports
// and hosts, the Services it calls through forwards (at the port offset,
// to the container's port), its sockets on loopback and the address the
// pods reach, and a slice for each port of its Services.
func TestDerive(t *testing.T) {
	got, err := serverPlan().derive(decodeManifests(t, serverManifests), kindAddress)
	if err != nil {
		t.Fatal(err)
	}
	want := &plan{
		How: "the gateway",
		Args: []string{
			"--context", "kind-x", "--namespace", "echo", "--address", "172.18.0.1",
			"--serving", "build/local/server.serving", "--handback", "build/local/server.handback", "--lock", "build/local/server.lock",
			"--replaces", "deployment/server",
			"--listen", "grpc=127.0.0.1:20100,[::1]:20100,172.18.0.1:20100",
			"--listen", "metrics=127.0.0.1:9100,[::1]:9100,172.18.0.1:9100",
			"--ready", "http://127.0.0.1:9100/readyz",
			"--slice", "server-service=grpc:20100",
			"--slice", "server-metrics-service=metrics:9100",
		},
		Env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4418",
			"OTEL_TRACES_SAMPLER":         "parentbased_always_on",
			"POD_NAME":                    "server-local",
			"POD_NAMESPACE":               "echo",
			"OTEL_RESOURCE_ATTRIBUTES":    "k8s.pod.name=server-local,k8s.namespace.name=echo",
			"SERVER_GRPC_PORT":            "20100",
			"SERVER_METRICS_PORT":         "9100",
			"SERVER_SHUTDOWN_TIMEOUT":     "10s",
			"SERVER_LISTEN_HOSTS":         "127.0.0.1,::1,172.18.0.1",
		},
		Forwards: []forwardSpec{{App: "jaeger", Local: 4418, Container: 14318, Name: "otlp-http"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("derive:\n got %+v\nwant %+v", got, want)
	}
}

// In debug mode pprof listens on loopback and Delve's front takes the
// debuggers; --set comes last; on macOS (the pods reach this machine's
// loopback through the VM) nothing but loopback is listened on.
func TestDeriveDebugOnLoopback(t *testing.T) {
	p := serverPlan()
	p.debugPort, p.delvePort = 6160, 2445
	p.set["SERVER_SHUTDOWN_TIMEOUT"] = "1s"
	got, err := p.derive(decodeManifests(t, serverManifests), hostAddress{Address: "192.168.65.254", Loopback: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(got.Args, " ")
	for _, want := range []string{
		"--listen grpc=127.0.0.1:20100 ", "--listen debug=127.0.0.1:6160 ",
		"--delve 127.0.0.1:2445 --dlv build/local/dlv ", "--address 192.168.65.254 ",
	} {
		if !strings.Contains(args+" ", want) {
			t.Errorf("the arguments have no %q: %s", want, args)
		}
	}
	if got.Env["SERVER_DEBUG_PORT"] != "6160" || got.Env["SERVER_SHUTDOWN_TIMEOUT"] != "1s" || got.Env["SERVER_LISTEN_HOSTS"] != "127.0.0.1" {
		t.Errorf("env: %v", got.Env)
	}
}

// What --local cannot copy here, or manifests it cannot follow, are
// refused with what and why.
func TestDeriveRefuses(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"a missing ConfigMap", `{"configMapRef":{"name":"tracing-7h2k"}}`, `{"configMapRef":{"name":"gone"}}`, "reads the ConfigMap gone, which the manifests do not have"},
		{"a Secret", `{"configMapRef":{"name":"tracing-7h2k"}}`, `{"secretRef":{"name":"creds"}}`, "reads a Secret"},
		{"a field a program here has not", `"metadata.name"`, `"status.podIP"`, "POD_NAME comes from the pod's status.podIP"},
		{"a Service port to no container port", `"targetPort":"grpc"`, `"targetPort":"grpcs"`, "Service server-service port grpc goes to no port of its container"},
		{"a container port with no --port", `{"name":"metrics","containerPort":9000}`, `{"name":"metrics","containerPort":9000},{"name":"admin","containerPort":9001}`, "port admin (9001) has no --port admin=PORT"},
		{"a probe of no port", `"readinessProbe":{"grpc":{"port":20000}}`, `"readinessProbe":{"httpGet":{"path":"/ready","port":8080}}`, "readiness is asked at port 8080, none of its container's ports"},
		{"a line break", `"value":"10s"`, `"value":"10s\nX=1"`, "SERVER_SHUTDOWN_TIMEOUT has a line break"},
		{"no Deployment", `"name":"server","labels"`, `"name":"api","labels"`, "no Deployment server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := strings.Replace(serverManifests, tt.old, tt.new, 1)
			if s == serverManifests {
				t.Fatalf("%q is not in the manifests", tt.old)
			}
			_, err := serverPlan().derive(decodeManifests(t, s), kindAddress)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("derive: %v; want %q", err, tt.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "a", "NS": "echo"}
	for in, want := range map[string]string{
		"$(A).$(NS)":   "a.echo",
		"$(MISSING)":   "$(MISSING)",
		"$$(A)":        "$(A)",
		"cost $5":      "cost $5",
		"$(A":          "$(A",
		"trailing $":   "trailing $",
		"$(A)$(A)$$$$": "aa$$",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// plan prints the plan as JSON and writes the environment file, which an
// unchanged environment leaves alone.
func TestPlanWritesTheEnvironment(t *testing.T) {
	p := serverPlan()
	p.dir = t.TempDir()
	m := fakeMachine("linux", []node{{Name: "vm", InternalIPs: []string{"10.244.0.1"}}}, []string{"127.0.0.1", "10.244.0.1"}, nil, nil)
	var out strings.Builder
	if err := p.plan(m, strings.NewReader(serverManifests), &out); err != nil {
		t.Fatal(err)
	}
	var got plan
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || got.Env["SERVER_LISTEN_HOSTS"] != "127.0.0.1,10.244.0.1" {
		t.Fatalf("plan printed %s (%v)", out.String(), err)
	}
	file := filepath.Join(p.dir, "server.env")
	b, err := os.ReadFile(file)
	if err != nil || !strings.HasPrefix(string(b), "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4418\nOTEL_RESOURCE_ATTRIBUTES=") {
		t.Fatalf("%s: %q, %v", file, b, err)
	}
	old := modTime(t, file)
	if err := os.Chtimes(file, old.Add(-time.Hour), old.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := p.plan(m, strings.NewReader(serverManifests), &out); err != nil {
		t.Fatal(err)
	}
	if !modTime(t, file).Equal(old.Add(-time.Hour)) {
		t.Error("an unchanged environment was written again")
	}
	if err := p.plan(m, strings.NewReader("{"), &out); err == nil || !strings.Contains(err.Error(), "the manifests on stdin") {
		t.Errorf("bad input: %v", err)
	}
}

func modTime(t *testing.T, file string) time.Time {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

func TestParsePlan(t *testing.T) {
	c, err := parsePlan([]string{"--context", "k", "--namespace", "ns", "--program", "client", "--port", "metrics=9001", "--set", "CLIENT_SERVER_ADDR=localhost:20000"}, os.Stderr)
	if err != nil || c.ports["metrics"] != 9001 || c.set["CLIENT_SERVER_ADDR"] != "localhost:20000" || c.dir != "build/local" {
		t.Fatalf("parsePlan: %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{"--context", "k", "--namespace", "ns"},
		{"--context", "k", "--namespace", "ns", "--program", "p", "--port", "metrics"},
		{"--context", "k", "--namespace", "ns", "--program", "p", "--port", "metrics=0"},
		{"--context", "k", "--namespace", "ns", "--program", "p", "--set", "=1"},
		{"--context", "k", "--namespace", "ns", "--program", "p", "extra"},
	} {
		if _, err := parsePlan(bad, io.Discard); err == nil {
			t.Errorf("parsePlan(%q): no error", bad)
		}
	}
}
