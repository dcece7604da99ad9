package proctest

import (
	"testing"
	"time"

	"github.com/go-delve/delve/service/dap/daptest"
	"github.com/google/go-dap"
)

// ExpectDAP reads c's messages until one of type M, skipping events that
// change nothing (output, capabilities, initialized...); one that says the
// program ended fails the test, as does none within a minute.
func ExpectDAP[M dap.Message](t *testing.T, c *daptest.Client) M {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		type read struct {
			m   dap.Message
			err error
		}
		got := make(chan read, 1)
		go func() {
			m, err := c.ReadMessage(t)
			got <- read{m, err}
		}()
		var r read
		select {
		case r = <-got:
		case <-deadline:
			var zero M
			t.Fatalf("no %T within a minute", zero)
		}
		if r.err != nil {
			t.Fatalf("reading DAP: %v", r.err)
		}
		switch m := r.m.(type) {
		case M:
			return m
		case *dap.TerminatedEvent, *dap.ExitedEvent:
			t.Fatalf("the debugger was told the program ended: %#v", m)
		case *dap.ErrorResponse:
			t.Fatalf("DAP error: %+v", m.Body)
		}
	}
}
