package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"example.com/grpc-metrics/scripts/internal/supervisor"
)

const (
	// tick is how often the binary (a stat) and, until it answers, the
	// program's readiness are looked at: a new build waits half of it on
	// average before it is handed over.
	tick = 25 * time.Millisecond
	// publishRetry spaces the attempts to make the slices after a failure.
	publishRetry = 2 * time.Second
	// recheck is how often made slices are looked at (one kubectl call for
	// all): a Service made again takes its old slices with it.
	recheck = 3 * time.Second
	// serviceRetry spaces the looks for Services that are not deployed yet.
	serviceRetry = 500 * time.Millisecond
	// A stop (SIGTERM) ends within stopTimeout, inside the 30s that Tilt
	// gives a serve_cmd before its SIGKILL (which would leave the slices
	// behind): the wait for the Services' pods ends handbackTimeout after
	// the stop; each kubectl request is bounded (requestTimeout); the
	// program gets what is left, at least haltTimeout.
	stopTimeout = 27 * time.Second
	haltTimeout = 3 * time.Second
	// handbackReport spaces the lines that say what the hand-back waits for.
	handbackReport = 5 * time.Second
	// startTimeout bounds a new build's start, until it reports READY=1.
	startTimeout = 10 * time.Second
	// withdrawnGrace lets the clients' watches see the slices go before the
	// program stops (they see it within milliseconds).
	withdrawnGrace = 500 * time.Millisecond
)

// handbackTimeout: see stopTimeout (a variable for the tests).
var handbackTimeout = 15 * time.Second

// runConfig is hostrun run's flags.
type runConfig struct {
	cluster  cluster
	address  string // what the slices name
	ready    string // URL that answers 200 once the program serves
	binary   string
	listens  []string // the program's sockets, as scripts/supervisor's --listen
	delve    string   // where debuggers attach, with the program under Delve
	dlv      string   // Delve's binary
	handback string
	serving  string
	replaces string // KIND/NAME
	lock     string // held shared while it runs (hostrun sweep)
	slices   []sliceSpec
	command  []string
}

// supervised is the program under a supervisor (scripts/internal/supervisor),
// which holds its sockets: a new build takes over from the running process
// without a connection refused, under Delve too.
type supervised struct {
	signals chan os.Signal
	done    chan struct{}
	err     error // of Run, once done is closed
}

// supervise runs the program on sockets until it stops; see supervised.
func (c *runConfig) supervise(sockets []supervisor.Socket, log *zap.Logger) (*supervised, error) {
	dir, err := os.MkdirTemp("", "hostrun-")
	if err != nil {
		return nil, err
	}
	s := &supervisor.Supervisor{Log: log, StartTimeout: startTimeout}
	var closeLauncher func()
	if c.delve == "" {
		s.Launcher = &supervisor.Exec{Command: c.command, Sockets: sockets, Dir: dir, Env: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
	} else {
		l, err := net.Listen("tcp", c.delve)
		if err != nil {
			os.RemoveAll(dir) //nolint:errcheck // best effort
			return nil, fmt.Errorf("--delve %s: %w", c.delve, err)
		}
		front := supervisor.NewFront(l, true, log.Named("debuggers"))
		go front.Serve()
		d := &supervisor.Delve{Dlv: c.dlv, Command: c.command, Sockets: sockets, Dir: dir, Env: os.Environ(), Front: front, Stdout: os.Stdout, Stderr: os.Stderr, Log: log}
		s.Launcher, s.Sequential, s.StartTimeout, closeLauncher = d, true, 0, d.Close
	}
	sv := &supervised{signals: make(chan os.Signal, 4), done: make(chan struct{})}
	go func() {
		sv.err = s.Run(sv.signals)
		if closeLauncher != nil {
			closeLauncher()
		}
		os.RemoveAll(dir) //nolint:errcheck // best effort
		close(sv.done)
	}()
	return sv, nil
}

// halt stops the program: SIGTERM, passed on by the supervisor, and a
// second one (every process, the draining ones too) if it has not stopped
// by the deadline.
func (sv *supervised) halt(deadline time.Time) {
	sv.signals <- syscall.SIGTERM
	select {
	case <-sv.done:
	case <-time.After(max(time.Until(deadline)-time.Second, haltTimeout)):
		sv.signals <- syscall.SIGTERM
		select {
		case <-sv.done:
		case <-time.After(time.Second):
			// The kernel stops what is left when hostrun exits (Linux).
		}
	}
}

// answers reports whether the program's readiness URL answers 200.
func (c *runConfig) answers(client *http.Client) bool {
	resp, err := client.Get(c.ready)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *runConfig) setServing(on bool) {
	if c.serving == "" {
		return
	}
	if on {
		os.WriteFile(c.serving, nil, 0o644) //nolint:errcheck // the probe then says not ready
	} else {
		os.Remove(c.serving) //nolint:errcheck // not there
	}
}

// unpublish withdraws the slices and tells Tilt's probe that nothing
// serves here; it reports whether the slices are gone.
func (c *runConfig) unpublish(logf func(string, ...any)) bool {
	c.setServing(false)
	if _, err := c.cluster.withdraw(c.slices); err != nil {
		logf("%v", err)
		return false
	}
	return true
}

// superviseOrLog runs the program, or logs why it could not (the next
// build tries again).
func (c *runConfig) superviseOrLog(sockets []supervisor.Socket, log *zap.Logger, logf func(string, ...any)) *supervised {
	sv, err := c.supervise(sockets, log)
	if err != nil {
		logf("could not run %s: %v", c.command[0], err)
	}
	return sv
}

// stamp tells one binary from the next.
type stamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (stamp, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, false
	}
	return stamp{fi.ModTime(), fi.Size()}, true
}

// program is the name of the workload this machine replaces (--replaces).
func (c *runConfig) program() string {
	_, name, _ := strings.Cut(c.replaces, "/")
	return name
}

func (c *runConfig) services() string {
	names := make([]string, len(c.slices))
	for i, s := range c.slices {
		names[i] = fmt.Sprintf("%s (%s %d)", s.service, s.portName, s.port)
	}
	return strings.Join(names, ", ")
}

// run runs the program until ctx ends; see the top of main.go.
func (c *runConfig) run(ctx context.Context, log io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(log, "hostrun: "+format+"\n", args...) }
	client := &http.Client{Timeout: 500 * time.Millisecond}

	if len(c.command) == 0 {
		// Slices that a hostrun killed before it could withdraw them name
		// this machine, where nothing may serve until the IDE starts it.
		c.unpublish(logf)
		return c.follow(ctx, client, logf)
	}
	// Slices that a hostrun killed before it could withdraw them stay:
	// they name this machine, whose sockets listen from now on (calls
	// wait in their backlog until the program accepts them), and the
	// slices made once it answers replace them. A start never waits for
	// the API server (it may not answer: a VPN down).
	var sockets []supervisor.Socket
	defer func() { supervisor.CloseSockets(sockets) }()
	for _, l := range c.listens {
		name, addrs, _ := supervisor.ParseListen(l)
		ss, err := supervisor.Listen(ctx, name, addrs)
		if err != nil {
			return err
		}
		sockets = append(sockets, ss...)
	}
	zlog := consoleLogger(log)
	var sv *supervised
	last, built := stampOf(c.binary)
	if built {
		var err error
		if sv, err = c.supervise(sockets, zlog); err != nil {
			return err
		}
	} else {
		logf("waiting for the first build of %s", c.binary)
	}
	var (
		answered, published bool
		p                   publisher
	)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		var ended <-chan struct{}
		if sv != nil {
			ended = sv.done
		}
		select {
		case <-ctx.Done():
			return c.stop(sv, published, logf)
		case <-ended:
			logf("%s exited (%v): the cluster's calls to it fail until a new build starts it again", c.command[0], sv.err)
			if published {
				c.unpublish(logf)
			}
			c.setServing(false)
			sv, answered, published = nil, false, false
		case <-t.C:
			if s, ok := stampOf(c.binary); ok && s != last {
				last = s
				if sv == nil {
					logf("a new build: starting it")
					sv = c.superviseOrLog(sockets, zlog, logf)
				} else {
					sv.signals <- syscall.SIGHUP
				}
			}
			if sv != nil && !answered && c.answers(client) {
				answered = true
				c.setServing(true)
			}
			if answered && published {
				published = p.still(c, logf)
			}
			if answered && !published {
				published = p.try(c, logf)
			}
		}
	}
}

// consoleLogger writes the supervisor's lines as console lines, the
// programs' format in the dev build.
func consoleLogger(w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	enc.EncodeLevel = zapcore.CapitalLevelEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), zapcore.InfoLevel)).Named("hostrun")
}

// publisher makes the slices, retrying, and says so once.
type publisher struct {
	next              time.Time
	waitingForService bool
	replaced          bool      // --replaces is done
	checked           time.Time // the made slices, last looked at
}

// still reports whether the slices made are still there and owned by
// their Services as they are now, looking every recheck; when not, they
// are to be made again.
func (p *publisher) still(c *runConfig, logf func(string, ...any)) bool {
	if time.Since(p.checked) < recheck {
		return true
	}
	p.checked = time.Now()
	switch ok, err := c.cluster.current(c.slices); {
	case errors.Is(err, errNoService):
		logf("a Service is gone (%v): its calls come here again once it is back", err)
		return false
	case err != nil:
		return true // kubectl failed: look again later, keep what is made
	case !ok:
		logf("a slice is gone or owned by an older Service: making the slices again")
		return false
	}
	return true
}

// try makes the slices unless a retry is not due; it reports whether they
// are made.
func (p *publisher) try(c *runConfig, logf func(string, ...any)) bool {
	if time.Now().Before(p.next) {
		return false
	}
	switch err := c.cluster.publish(c.slices, c.address); {
	case err == nil:
		p.waitingForService = false
		logf("the cluster's calls to %s now come here, to %s", c.services(), c.address)
		if c.replaces != "" && !p.replaced {
			// Its pods serve on while they stop (preStop), and this
			// machine is in the slices already.
			if out, err := c.cluster.run(nil, "delete", c.replaces, "--ignore-not-found", "--wait=false"); err != nil {
				logf("could not delete %s: %v", c.replaces, err)
			} else if len(out) > 0 {
				logf("%s of the cluster is deleted: this machine serves its Services", c.replaces)
			}
			p.replaced = true
		}
		return true
	case errors.Is(err, errNoService):
		if !p.waitingForService {
			logf("serving; waiting for the Services to be deployed (%v)", err)
			p.waitingForService = true
		}
		p.next = time.Now().Add(serviceRetry)
	default:
		logf("could not send the cluster's calls here: %v; retrying", err)
		p.next = time.Now().Add(publishRetry)
	}
	return false
}

// A followed program (no COMMAND) is looked at every followTick; its port
// must refuse connections refusedAfter times in a row before its slices
// are withdrawn.
const (
	followTick   = 100 * time.Millisecond
	refusedAfter = 3
)

// follow is run without a COMMAND: the slices follow a program that
// another started (an IDE's debugger).
func (c *runConfig) follow(ctx context.Context, client *http.Client, logf func(string, ...any)) error {
	u, err := url.Parse(c.ready)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--ready %q: not a URL", c.ready)
	}
	logf("waiting for the program on this machine to answer %s (start it in your IDE)", c.ready)
	var (
		published bool
		refused   int
		p         publisher
	)
	t := time.NewTicker(followTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return c.stop(nil, published, logf)
		case <-t.C:
		}
		if !published {
			if c.answers(client) {
				c.setServing(true)
				published = p.try(c, logf)
			}
			continue
		}
		conn, err := net.DialTimeout("tcp", u.Host, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			refused = 0
			published = p.still(c, logf)
			continue
		}
		if refused++; refused < refusedAfter {
			continue
		}
		logf("the program on this machine stopped (%v): the cluster's calls no longer come here", err)
		c.unpublish(logf)
		published, refused = false, 0
	}
}

// stop withdraws the slices (once the Services' pods are ready, if the
// program goes back to the cluster) and then stops the program, within
// stopTimeout.
func (c *runConfig) stop(sv *supervised, published bool, logf func(string, ...any)) error {
	deadline := time.Now().Add(stopTimeout)
	if published {
		if _, err := os.Stat(c.handback); c.handback != "" && err == nil {
			c.handBack(logf)
		}
		if c.unpublish(logf) {
			logf("the cluster's calls no longer come here")
		}
		time.Sleep(withdrawnGrace)
	}
	c.setServing(false)
	if sv != nil {
		sv.halt(deadline)
	}
	return nil
}

// handBack serves on until the Services' pods are ready, saying what it
// waits for, for at most handbackTimeout.
func (c *runConfig) handBack(logf func(string, ...any)) {
	logf("handing the Services back to the cluster: serving until their pods are ready (at most %v)", handbackTimeout)
	start := time.Now()
	var said time.Time
	for {
		ok, why := c.cluster.servedElsewhere(c.slices)
		switch {
		case ok:
			logf("their pods are ready after %v", time.Since(start).Round(100*time.Millisecond))
			return
		case time.Since(start) >= handbackTimeout:
			logf("%s after %v: the cluster's calls to it fail until a pod is ready. "+
				"Its resource's log in Tilt says why none is (an image that did not build: fix it and save, or press the resource's rebuild button); "+
				"or run it here again (tilt args -- --local %s)", why, handbackTimeout, c.program())
			return
		case time.Since(said) >= handbackReport:
			logf("waiting: %s (%v)", why, time.Since(start).Round(time.Second))
			said = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
}
