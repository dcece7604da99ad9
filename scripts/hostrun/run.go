package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

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
