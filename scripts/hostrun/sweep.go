package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// A hostrun that runs holds a shared lock on its --lock file for as long as
// it may have slices in the cluster. One killed with SIGKILL withdraws
// nothing, and kube-proxy would go on sending one connection in N to a
// dead address: hostrun sweep, which `tilt up` runs for each program that
// is not on this machine, deletes such slices once it can take the lock
// exclusively, that is once no hostrun of that program runs.

// lock takes the lock how (syscall.LOCK_SH, LOCK_EX...) on path, made if
// missing; the lock lasts until the file is closed or the process ends.
func lock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("--lock %s: %w", path, err)
	}
	return f, nil
}

// sweepConfig is hostrun sweep's flags.
type sweepConfig struct {
	cluster  cluster
	lock     string
	services []string
}

func parseSweep(args []string, stderr io.Writer) (*sweepConfig, error) {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c sweepConfig
	var services sliceServices
	c.cluster.flags(fs)
	fs.StringVar(&c.lock, "lock", "", "the --lock file of the program's hostrun run")
	fs.Var(&services, "service", "a Service whose slice a hostrun may have left (repeat)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.services = services
	if c.cluster.context == "" || c.cluster.namespace == "" || c.lock == "" || len(c.services) == 0 || fs.NArg() > 0 {
		return nil, errors.New("usage: hostrun sweep --context CTX --namespace NS --lock FILE --service NAME...")
	}
	return &c, nil
}

type sliceServices []string

func (s *sliceServices) String() string     { return strings.Join(*s, ",") }
func (s *sliceServices) Set(v string) error { *s = append(*s, v); return nil }

// sweep deletes the slices of the Services, unless a hostrun runs (holds
// the lock). It says what it did.
func (c *sweepConfig) sweep(out io.Writer) error {
	f, err := lock(c.lock, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(out, "hostrun: a hostrun runs (%s): its slices stay\n", c.lock)
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var specs []sliceSpec
	for _, s := range c.services {
		specs = append(specs, sliceSpec{service: s})
	}
	deleted, err := c.cluster.withdraw(specs)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(deleted))) > 0 {
		fmt.Fprintf(out, "hostrun: deleted the slices a stopped hostrun left, which named this machine:\n%s", deleted)
	}
	return nil
}
