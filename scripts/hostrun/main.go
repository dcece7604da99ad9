// Command hostrun runs one of the programs on this machine in place of its
// pods, for the Tiltfile's --local: the cluster's calls and Prometheus's
// scrapes reach it through EndpointSlices of its Services that name this
// machine. Nothing runs in the cluster for it: no agent, no sidecar.
//
//	hostrun address --context CTX
//
// prints, as JSON, the address of this machine that the cluster's pods
// reach, or fails with why there is none (address.go).
//
//	hostrun plan --context CTX --namespace NS --program NAME --port PORTNAME=PORT...
//	        [--debug-port PORT] [--delve-port PORT] [--port-offset N] [--set KEY=VALUE]...
//	        [--dir DIR] < OBJECTS.json
//
// reads the objects that Tilt deploys (a JSON list) and prints, as JSON,
// what the Tiltfile needs to run the Deployment NAME here instead: the
// arguments of hostrun run (its sockets, its Services' slices, where it
// answers), its environment as its pod would have it (ConfigMaps, $(VAR),
// the pod's fields) with this machine's ports and the Services it calls
// through forwards, and those forwards. It writes the environment to
// DIR/NAME.env, for an IDE (plan.go).
//
//	hostrun run --context CTX --namespace NS --address IP --ready URL --binary FILE
//	        --slice SERVICE=PORTNAME:PORT... --listen NAME=HOST:PORT[,HOST:PORT...]...
//	        [--delve HOST:PORT --dlv FILE] [--handback FILE] [--serving FILE]
//	        [--lock FILE] [-- COMMAND [ARG...]]
//
// runs COMMAND under a supervisor (scripts/internal/supervisor) that holds
// the sockets --listen names, as a pod's does, and, once URL answers 200,
// makes the slices (run.go). A new FILE (the next build) takes over from
// the running process on the same sockets; with --delve, under one Delve
// server that debuggers attach to at HOST:PORT. SIGTERM or SIGINT withdraws
// the slices and stops the program; if the file --handback names exists
// (the Tiltfile writes it when it deploys the program to the cluster again)
// the slices stay until the Services' pods are ready. Without COMMAND (and
// --binary) another starts the program, an IDE's debugger: the slices are
// made while URL answers and withdrawn once its port refuses connections
// (a process stopped at a breakpoint still holds it). It holds a shared lock
// on the --lock file while it runs.
//
//	hostrun sweep --context CTX --namespace NS --lock FILE --service NAME...
//
// deletes the slices that a hostrun killed with SIGKILL left (they name
// this machine, where nothing serves), once no hostrun holds the lock
// (sweep.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"example.com/grpc-metrics/scripts/internal/supervisor"
)

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hostrun:", err)
		os.Exit(1)
	}
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: hostrun address|plan|run|sweep [flags]")
	}
	switch args[0] {
	case "address":
		fs := flag.NewFlagSet("address", flag.ContinueOnError)
		fs.SetOutput(stderr)
		kubeContext := fs.String("context", "", "kube context of the cluster")
		kubectl := fs.String("kubectl", "kubectl", "kubectl to ask the cluster with")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *kubeContext == "" || fs.NArg() > 0 {
			return errors.New("usage: hostrun address --context CTX")
		}
		a, err := findAddress(realMachine(runtime.GOOS, *kubectl, *kubeContext), *kubeContext)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(a)
	case "plan":
		cfg, err := parsePlan(args[1:], stderr)
		if err != nil {
			return err
		}
		return cfg.plan(realMachine(runtime.GOOS, cfg.cluster.kubectl, cfg.cluster.context), os.Stdin, stdout)
	case "sweep":
		cfg, err := parseSweep(args[1:], stderr)
		if err != nil {
			return err
		}
		return cfg.sweep(stdout)
	case "run":
		cfg, err := parseRun(args[1:], stderr)
		if err != nil {
			return err
		}
		if cfg.lock != "" {
			// Shared: held until hostrun exits.
			f, err := lock(cfg.lock, syscall.LOCK_SH)
			if err != nil {
				return err
			}
			defer f.Close()
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return cfg.run(ctx, stderr)
	}
	return fmt.Errorf("unknown command %q: address, plan, run or sweep", args[0])
}

// listenFlags collects repeated --listen values.
type listenFlags []string

func (l *listenFlags) String() string { return strings.Join(*l, " ") }

func (l *listenFlags) Set(v string) error {
	if _, _, err := supervisor.ParseListen(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// sliceFlags collects repeated --slice values.
type sliceFlags []sliceSpec

func (s *sliceFlags) String() string { return fmt.Sprint(*s) }

func (s *sliceFlags) Set(v string) error {
	spec, err := parseSliceSpec(v)
	if err != nil {
		return err
	}
	*s = append(*s, spec)
	return nil
}

func parseRun(args []string, stderr io.Writer) (*runConfig, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c runConfig
	var specs sliceFlags
	var listens listenFlags
	c.cluster.flags(fs)
	fs.StringVar(&c.address, "address", "", "the address of this machine that the pods reach (hostrun address)")
	fs.StringVar(&c.ready, "ready", "", "URL that answers 200 once the program serves")
	fs.StringVar(&c.binary, "binary", "", "the program's binary: a new one takes over from the running process")
	fs.Var(&listens, "listen", "NAME=HOST:PORT[,HOST:PORT...]: a socket the program is given by NAME (repeat)")
	fs.StringVar(&c.delve, "delve", "", "HOST:PORT: run the program under Delve; debuggers attach here")
	fs.StringVar(&c.dlv, "dlv", "dlv", "Delve's binary, with --delve")
	fs.StringVar(&c.handback, "handback", "", "when this file exists at a stop, the slices stay until the Services' pods are ready")
	fs.StringVar(&c.serving, "serving", "", "file that exists while the program answers (Tilt's readiness probe)")
	fs.Var(&specs, "slice", "SERVICE=PORTNAME:PORT whose calls come here (repeat)")
	fs.StringVar(&c.lock, "lock", "", "file locked while this hostrun runs: hostrun sweep leaves its slices alone meanwhile")
	fs.StringVar(&c.replaces, "replaces", "", "KIND/NAME of the cluster's workload that this machine replaces, deleted once the slices are made (a Deployment left by an earlier tilt up)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.slices, c.command, c.listens = specs, fs.Args(), listens
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"--context", c.cluster.context}, {"--namespace", c.cluster.namespace}, {"--address", c.address},
		{"--ready", c.ready},
	} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(c.slices) == 0 {
		missing = append(missing, "--slice")
	}
	if len(c.command) > 0 && c.binary == "" {
		missing = append(missing, "--binary (with a COMMAND)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("run: missing %s", strings.Join(missing, ", "))
	}
	return &c, nil
}
