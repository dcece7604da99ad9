package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Front is where debuggers attach: the address an IDE is given. It passes
// each connection on to Delve, in either of Delve's protocols (DAP, which
// VS Code speaks, and the JSON-RPC API, GoLand's), and keeps the debugger's
// session across the program's processes. While a process hands over
// (Hold), what tells a debugger that the program ended (DAP's exited and
// terminated events, an API call's "exited" answer) is kept back; once the
// next process runs under Delve (Resume), the debugger's run goes on in it:
// DAP gets a continue on its behalf, an API call is made again. The
// debugger stays attached, its breakpoints (kept by Delve's restart) stop
// the new code, and it never learns of the hand-over but by a line in its
// console.
type Front struct {
	Listener net.Listener
	// SameUser accepts only connections of this machine's user running the
	// supervisor, as Delve itself does on loopback (Linux); off in a pod,
	// whose port-forwarded connections are the container runtime's.
	SameUser bool
	Log      *zap.Logger
	// Detached, when set, is called after the last debugger's connection
	// ends (and the front is not closing) with no run of the program in
	// flight: the program must run when no debugger is attached, whatever
	// state the last one left it in (one that runs it as it goes, such as
	// Delve's API client's Disconnect(true), needs nothing).
	Detached func()

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when a session's state changes
	dial     func() (net.Conn, error)
	up       chan struct{} // closed once dial is set
	holding  bool
	sessions map[frontSession]bool
	closed   bool
}

// frontSession is one debugger's connection.
type frontSession interface {
	// running: the debugger waits for the program to stop; held: that wait
	// ended with the program's exit during a hold, kept back.
	state() (running, held bool)
	// resume makes the kept-back run go on in the new process, pid, or,
	// with ended, lets the debugger see the program's end after all.
	resume(pid int, ended bool)
	start(in io.Reader)
	close()
}

// NewFront makes a Front on l; Serve serves it once Delve is up (SetDelve).
func NewFront(l net.Listener, sameUser bool, log *zap.Logger) *Front {
	return &Front{Listener: l, SameUser: sameUser, Log: log, changed: make(chan struct{}), up: make(chan struct{}), sessions: map[frontSession]bool{}}
}

// SetDelve sets how to reach Delve's server, once it runs; connections
// accepted before wait for it.
func (f *Front) SetDelve(dial func() (net.Conn, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dial == nil {
		close(f.up)
	}
	f.dial = dial
}

// Serve accepts debuggers until the listener is closed.
func (f *Front) Serve() {
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			f.Log.Warn("debugger connection", zap.Error(err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if f.SameUser && !sameUser(c) {
			f.Log.Warn("closed a debugger connection of another user: only this machine's user may attach", zap.Stringer("from", c.RemoteAddr()))
			c.Close()
			continue
		}
		go f.serve(c)
	}
}

func (f *Front) serve(client net.Conn) {
	<-f.up
	f.mu.Lock()
	dial := f.dial
	f.mu.Unlock()
	server, err := dial()
	if err != nil {
		f.Log.Warn("a debugger attached, but Delve does not answer", zap.Error(err))
		client.Close()
		return
	}
	in := bufio.NewReader(client)
	first, err := in.Peek(1)
	if err != nil {
		client.Close()
		server.Close()
		return
	}
	var s frontSession
	if first[0] == '{' {
		s = newRPCSession(f, client, server)
	} else {
		s = newDAPSession(f, client, server)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		s.close()
		return
	}
	f.sessions[s] = true
	f.mu.Unlock()
	s.start(in)
}

// forget drops a session whose connection ended.
func (f *Front) forget(s frontSession) {
	f.mu.Lock()
	delete(f.sessions, s)
	f.changedLocked()
	running, held := s.state()
	last := len(f.sessions) == 0 && !f.closed && f.Detached != nil && !running && !held
	f.mu.Unlock()
	if last {
		f.Detached()
	}
}

// changedLocked wakes Resume's wait; f.mu is held.
func (f *Front) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// update runs fn under the lock and wakes Resume's wait.
func (f *Front) update(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	f.changedLocked()
}

// Hold starts a hand-over: the program's end is kept from the debuggers.
func (f *Front) Hold() {
	f.mu.Lock()
	f.holding = true
	f.mu.Unlock()
}

func (f *Front) isHolding() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holding
}

// heldWait bounds how long Resume waits for a debugger's run to report the
// old process's end (Delve sends it as it sees the exit, in milliseconds).
const heldWait = 2 * time.Second

// Resume ends a hold: once every debugger that was running the program has
// seen it end, each such run goes on in the new process, pid. It reports
// how many debuggers run it now, and how many others are attached without
// running it (one that halted the program meanwhile): with neither, the
// supervisor runs it itself.
func (f *Front) Resume(pid int) (resumed, idle int) {
	f.mu.Lock()
	if !f.settleLocked(time.Now().Add(heldWait)) {
		f.Log.Warn("a debugger's run did not report the previous process's end in time")
	}
	f.holding = false
	var held []frontSession
	for s := range f.sessions {
		switch running, h := s.state(); {
		case h:
			held = append(held, s)
		case !running:
			idle++
		}
	}
	f.mu.Unlock()
	for _, s := range held {
		s.resume(pid, false)
	}
	return len(held), idle
}

// settleLocked waits until no debugger runs the program without having
// seen its end, or deadline; f.mu is held, and released while it waits.
func (f *Front) settleLocked(deadline time.Time) bool {
	for {
		settled := true
		for s := range f.sessions {
			if running, held := s.state(); running && !held {
				settled = false
			}
		}
		if settled {
			return true
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
			f.mu.Lock()
		case <-time.After(time.Until(deadline)):
			f.mu.Lock()
			return false
		}
	}
}

// Close closes the listener and every debugger's connection, first letting
// a held debugger see that the program ended.
func (f *Front) Close() {
	f.Listener.Close() //nolint:errcheck // ends Serve
	f.mu.Lock()
	f.closed, f.holding = true, false
	var all, held []frontSession
	for s := range f.sessions {
		all = append(all, s)
		if _, h := s.state(); h {
			held = append(held, s)
		}
	}
	f.mu.Unlock()
	for _, s := range held {
		s.resume(0, true)
	}
	for _, s := range all {
		s.close()
	}
}

// haltRetry is how long a debugger's halt (API) or pause (DAP) waits for
// Delve's answer before the front sends Delve another. Delve clears a stop
// request as a continue starts: a halt that lands just before a continue
// (the supervisor's after a restart, Delve's own after a Disconnect(true))
// then waits for the program's next stop, which may never come. The second
// one stops the run, and the first is answered; the answers to the front's
// own go to no one.
const haltRetry = 500 * time.Millisecond

// repeat writes, every haltRetry, the message that next makes under f.mu,
// until next makes none (the debugger's request is answered, or its
// connection ended) or a write fails.
func (f *Front) repeat(next func() []byte, write func([]byte) error) {
	for {
		time.Sleep(haltRetry)
		var msg []byte
		f.update(func() { msg = next() })
		if msg == nil || write(msg) != nil {
			return
		}
	}
}

// notice is the line a debugger's console gets when a new process runs.
func notice(pid int) string {
	return fmt.Sprintf("A new build of the program runs under the debugger (pid %d); breakpoints are kept.\n", pid)
}
