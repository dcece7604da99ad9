package main

import (
	"errors"
	"net/http"
	"os"
	"time"
)

// answers reports whether the program's readiness URL answers 200.
func (c *runConfig) answers(client *http.Client) bool {
	resp, err := client.Get(c.ready)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// setServing creates the --serving file (on) or removes it (off): Tilt's
// readiness probe looks for it.
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
