package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// planConfig is hostrun plan's flags: what the Tiltfile knows and the
// manifests do not.
type planConfig struct {
	cluster   cluster
	program   string         // the Deployment that this machine replaces
	dir       string         // where the program's files are (build/local)
	ports     map[string]int // the container's ports by name: the port here
	debugPort int            // pprof's port here, in debug mode
	delvePort int            // where debuggers attach here, in debug mode
	offset    int            // added to the local ports of forwards
	set       map[string]string
}

// plan is what the Tiltfile needs for one program run here (hostrun plan's
// output): the arguments of hostrun run, the program's environment, and
// the forwards that the environment's URLs now go through.
type plan struct {
	How      string            `json:"how"`
	Args     []string          `json:"args"`
	Env      map[string]string `json:"env"`
	Forwards []forwardSpec     `json:"forwards"`
}

// forwardSpec is a port-forward that Tilt makes for the resource App.
type forwardSpec struct {
	App       string `json:"app"`
	Local     int    `json:"local"`
	Container int    `json:"container"`
	Name      string `json:"name"`
}

// derive makes the plan of program p for this machine at addr.
func (p *planConfig) derive(m manifests, addr hostAddress) (*plan, error) {
	c, err := m.container(p.program)
	if err != nil {
		return nil, err
	}
	env, err := p.environment(m, c)
	if err != nil {
		return nil, err
	}
	hosts := slices.Clone(addr.Loopback)
	if addr.Listen != "" {
		hosts = append(hosts, addr.Listen)
	}
	prefix := strings.ToUpper(p.program)
	out := &plan{How: addr.How, Env: env, Forwards: []forwardSpec{}}
	env[prefix+"_LISTEN_HOSTS"] = strings.Join(hosts, ",")
	out.Args = []string{"--context", p.cluster.context, "--namespace", p.cluster.namespace, "--address", addr.Address,
		"--serving", p.file("serving"), "--handback", p.file("handback"), "--lock", p.file("lock"),
		"--replaces", "deployment/" + p.program}
	byName := map[string]int{}
	for _, cp := range c.Ports {
		here, ok := p.ports[cp.Name]
		if !ok {
			return nil, fmt.Errorf("the container's port %s (%d) has no --port %s=PORT: where it listens here", cp.Name, cp.ContainerPort, cp.Name)
		}
		byName[cp.Name] = here
		env[prefix+"_"+strings.ToUpper(cp.Name)+"_PORT"] = strconv.Itoa(here)
		out.Args = append(out.Args, "--listen", cp.Name+"="+joinHosts(hosts, here))
	}
	// Its readiness probe's URL, or the programs' own (/readyz on the
	// metrics port) for a probe of another kind (the server's is gRPC).
	get := &httpGet{Path: "/readyz", Port: intOrString{name: "metrics"}}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
		get = c.ReadinessProbe.HTTPGet
	}
	_, name, ok := c.port(get.Port)
	probe := byName[name]
	if !ok {
		return nil, fmt.Errorf("its readiness is asked at port %s, none of its container's ports: hostrun sends the cluster's calls here once the program answers there", get.Port)
	}
	out.Args = append(out.Args, "--ready", fmt.Sprintf("http://127.0.0.1:%d%s", probe, get.Path))
	if p.debugPort != 0 {
		env[prefix+"_DEBUG_PORT"] = strconv.Itoa(p.debugPort)
		out.Args = append(out.Args, "--listen", "debug="+net.JoinHostPort("127.0.0.1", strconv.Itoa(p.debugPort)))
	}
	if p.delvePort != 0 {
		out.Args = append(out.Args, "--delve", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.delvePort)), "--dlv", filepath.Join(p.dir, "dlv"))
	}
	for _, svc := range m {
		if svc.Kind != "Service" || svc.Metadata.Labels["app"] != p.program {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			_, name, ok := m.containerPort(p.program, sp)
			if !ok {
				return nil, fmt.Errorf("Service %s port %s goes to no port of its container", svc.Metadata.Name, sp.Name)
			}
			out.Args = append(out.Args, "--slice", fmt.Sprintf("%s=%s:%d", svc.Metadata.Name, sp.Name, byName[name]))
		}
	}
	for k, v := range env {
		if u, f, ok := p.onThisMachine(m, v); ok {
			env[k] = u
			out.Forwards = append(out.Forwards, f)
		}
	}
	slices.SortFunc(out.Forwards, func(a, b forwardSpec) int { return a.Local - b.Local })
	out.Forwards = slices.Compact(out.Forwards)
	for k, v := range p.set {
		env[k] = v
	}
	for k, v := range env {
		if strings.ContainsAny(v, "\n\x00") {
			return nil, fmt.Errorf("%s has a line break: the environment file (one KEY=VALUE a line) cannot hold it", k)
		}
	}
	return out, nil
}

func (p *planConfig) file(ext string) string {
	return filepath.Join(p.dir, p.program+"."+ext)
}

func joinHosts(hosts []string, port int) string {
	addrs := make([]string, len(hosts))
	for i, h := range hosts {
		addrs[i] = net.JoinHostPort(h, strconv.Itoa(port))
	}
	return strings.Join(addrs, ",")
}

// environment is the environment that the container c has in its pod, as
// the kubelet makes it: its ConfigMaps' values (envFrom), then its env in
// order, $(VAR) expanded, with the pod's own fields as they are here.
func (p *planConfig) environment(m manifests, c *container) (map[string]string, error) {
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			return nil, fmt.Errorf("its container reads a Secret (envFrom), which --local does not copy here")
		}
		cm := m.find("ConfigMap", from.ConfigMapRef.Name)
		if cm == nil && !from.ConfigMapRef.Optional {
			return nil, fmt.Errorf("its container reads the ConfigMap %s, which the manifests do not have", from.ConfigMapRef.Name)
		}
		if cm != nil {
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		}
	}
	fields := map[string]string{"metadata.name": p.program + "-local", "metadata.namespace": p.cluster.namespace}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("%s comes from the pod's %s, which a program here has not", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := m.find("ConfigMap", ref.Name)
			v, ok := "", false
			if cm != nil {
				v, ok = cm.Data[ref.Key]
			}
			if !ok && !ref.Optional {
				return nil, fmt.Errorf("%s comes from key %s of the ConfigMap %s, which the manifests do not have", e.Name, ref.Key, ref.Name)
			}
			if ok {
				env[e.Name] = v
			}
		default:
			return nil, fmt.Errorf("%s comes from a Secret or a resource field, which --local does not copy here", e.Name)
		}
	}
	return env, nil
}

// expand replaces $(VAR) in s by VAR's value in env, as the kubelet does:
// $$ is a $, and a reference to a variable not defined stays as it is.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := env[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// onThisMachine rewrites v, when it is a URL of a Service of the
// manifests (http://jaeger:4318), to reach that Service from here: through
// a port-forward from localhost, which it returns.
func (p *planConfig) onThisMachine(m manifests, v string) (string, forwardSpec, bool) {
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		return "", forwardSpec{}, false
	}
	hostport, path, _ := strings.Cut(rest, "/")
	host, port, err := net.SplitHostPort(hostport)
	n, err2 := strconv.Atoi(port)
	if err != nil || err2 != nil {
		return "", forwardSpec{}, false
	}
	name, _, _ := strings.Cut(host, ".")
	svc := m.find("Service", name)
	if svc == nil || (host != name && !strings.HasPrefix(host, name+"."+p.cluster.namespace)) {
		return "", forwardSpec{}, false
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Port != n {
			continue
		}
		app := svc.Metadata.Labels["app"]
		target, _, ok := m.containerPort(app, sp)
		if !ok {
			target = n
		}
		f := forwardSpec{App: app, Local: n + p.offset, Container: target, Name: cmp.Or(sp.Name, port)}
		u := fmt.Sprintf("%s://localhost:%d", scheme, f.Local)
		if path != "" || strings.HasSuffix(rest, "/") {
			u += "/" + path
		}
		return u, f, true
	}
	return "", forwardSpec{}, false
}

// writeEnv writes env to file, one KEY=VALUE a line, sorted (an IDE's
// envFile), unless it holds that already (Tilt watches it).
func writeEnv(file string, env map[string]string) error {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	if old, err := os.ReadFile(file); err == nil && string(old) == b.String() {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// portFlags collects repeated --port NAME=PORT values.
type portFlags map[string]int

func (p portFlags) String() string { return fmt.Sprint(map[string]int(p)) }

func (p portFlags) Set(v string) error {
	name, port, ok := strings.Cut(v, "=")
	n, err := strconv.Atoi(port)
	if !ok || name == "" || err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: want NAME=PORT, such as grpc=20000", v)
	}
	p[name] = n
	return nil
}

// setFlags collects repeated --set KEY=VALUE values.
type setFlags map[string]string

func (s setFlags) String() string { return fmt.Sprint(map[string]string(s)) }

func (s setFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	s[k] = val
	return nil
}

func parsePlan(args []string, stderr io.Writer) (*planConfig, error) {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := planConfig{ports: map[string]int{}, set: map[string]string{}}
	c.cluster.flags(fs)
	fs.StringVar(&c.program, "program", "", "the Deployment that runs here instead")
	fs.StringVar(&c.dir, "dir", "build/local", "where the program's binary and files are")
	fs.Var(portFlags(c.ports), "port", "NAME=PORT: the container's port NAME is PORT here (repeat)")
	fs.IntVar(&c.debugPort, "debug-port", 0, "pprof's port here (debug mode)")
	fs.IntVar(&c.delvePort, "delve-port", 0, "where debuggers attach here (debug mode)")
	fs.IntVar(&c.offset, "port-offset", 0, "added to the local port of each forward")
	fs.Var(setFlags(c.set), "set", "KEY=VALUE: set in the program's environment, after the rest (repeat)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.cluster.context == "" || c.cluster.namespace == "" || c.program == "" || fs.NArg() > 0 {
		return nil, errors.New("usage: hostrun plan --context CTX --namespace NS --program NAME --port NAME=PORT... < OBJECTS.json")
	}
	return &c, nil
}

// plan prints, as JSON, the plan of the program for this machine, read
// from the objects (a JSON list) on stdin, and writes its environment to
// DIR/NAME.env.
func (p *planConfig) plan(m machine, stdin io.Reader, stdout io.Writer) error {
	var objs manifests
	if err := json.NewDecoder(stdin).Decode(&objs); err != nil {
		return fmt.Errorf("the manifests on stdin: %w", err)
	}
	addr, err := findAddress(m, p.cluster.context)
	if err != nil {
		return err
	}
	out, err := p.derive(objs, addr)
	if err != nil {
		return fmt.Errorf("--local %s: %w", p.program, err)
	}
	if err := writeEnv(p.file("env"), out.Env); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(out)
}
