package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

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
