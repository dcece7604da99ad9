package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-dap"
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
	f.mu.Unlock()
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
// how many debuggers run it now (none: the supervisor runs it itself).
func (f *Front) Resume(pid int) int {
	f.mu.Lock()
	if !f.settleLocked(time.Now().Add(heldWait)) {
		f.Log.Warn("a debugger's run did not report the previous process's end in time")
	}
	f.holding = false
	var held []frontSession
	for s := range f.sessions {
		if _, h := s.state(); h {
			held = append(held, s)
		}
	}
	f.mu.Unlock()
	for _, s := range held {
		s.resume(pid, false)
	}
	return len(held)
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

// notice is the line a debugger's console gets when a new process runs.
func notice(pid int) string {
	return fmt.Sprintf("A new build of the program runs under the debugger (pid %d); breakpoints are kept.\n", pid)
}

// dapSession is a DAP client's connection (an IDE such as VS Code).
type dapSession struct {
	f              *Front
	client, server net.Conn
	toClient       sync.Mutex // serializes writes to client
	toServer       sync.Mutex // serializes writes to server

	// Under f.mu:
	running, held bool
	disconnecting bool
	kept          [][]byte         // the held end: exited, terminated
	injected      map[int]struct{} // seq of the continues sent on the client's behalf
	seq           int              // of the messages the front makes itself
}

// dapMessage is the part of a DAP message the front reads.
type dapMessage struct {
	Seq        int    `json:"seq"`
	Type       string `json:"type"`
	Command    string `json:"command"`
	Event      string `json:"event"`
	RequestSeq int    `json:"request_seq"`
}

// dapRuns are the requests after which the program runs until it stops.
var dapRuns = map[string]bool{"continue": true, "next": true, "stepIn": true, "stepOut": true, "stepBack": true, "reverseContinue": true, "configurationDone": true}

func newDAPSession(f *Front, client, server net.Conn) *dapSession {
	return &dapSession{f: f, client: client, server: server, injected: map[int]struct{}{}, seq: 1 << 30}
}

func (s *dapSession) start(in io.Reader) {
	go s.pump(bufio.NewReader(in), s.fromClient, func() { s.server.Close() })
	go s.pump(bufio.NewReader(s.server), s.fromServer, func() { s.client.Close(); s.f.forget(s) })
}

// pump reads DAP messages from r and hands each to handle until r fails,
// then calls done.
func (s *dapSession) pump(r *bufio.Reader, handle func([]byte) error, done func()) {
	defer done()
	for {
		msg, err := dap.ReadBaseMessage(r)
		if err != nil {
			return
		}
		if handle(msg) != nil {
			return
		}
	}
}

func (s *dapSession) fromClient(msg []byte) error {
	var m dapMessage
	if json.Unmarshal(msg, &m) == nil && m.Type == "request" {
		s.f.update(func() {
			if dapRuns[m.Command] {
				s.running = true
			}
			if m.Command == "disconnect" {
				s.disconnecting = true
			}
		})
	}
	return s.write(&s.toServer, s.server, msg)
}

func (s *dapSession) fromServer(msg []byte) error {
	var m dapMessage
	if json.Unmarshal(msg, &m) != nil {
		return s.write(&s.toClient, s.client, msg)
	}
	drop := false
	s.f.mu.Lock()
	switch {
	case m.Type == "response":
		if _, ok := s.injected[m.RequestSeq]; ok {
			delete(s.injected, m.RequestSeq)
			drop = true
		}
	case m.Type == "event" && m.Event == "stopped":
		s.running = false
	case m.Type == "event" && (m.Event == "exited" || m.Event == "terminated"):
		// Delve tells an end with exited, then terminated: the session is
		// held once both are kept.
		if s.f.holding && !s.disconnecting {
			s.held, drop = m.Event == "terminated", true
			s.kept = append(s.kept, msg)
		} else {
			s.running = false
		}
	}
	s.f.changedLocked()
	s.f.mu.Unlock()
	if drop {
		return nil
	}
	return s.write(&s.toClient, s.client, msg)
}

func (s *dapSession) write(mu *sync.Mutex, to net.Conn, msg []byte) error {
	mu.Lock()
	defer mu.Unlock()
	return dap.WriteBaseMessage(to, msg)
}

func (s *dapSession) state() (running, held bool) { return s.running, s.held }

func (s *dapSession) resume(pid int, ended bool) {
	s.f.mu.Lock()
	kept := s.kept
	s.kept, s.held = nil, false
	s.seq++
	seq := s.seq
	if !ended {
		s.injected[seq] = struct{}{}
	}
	s.f.changedLocked()
	s.f.mu.Unlock()
	if ended {
		for _, msg := range kept {
			s.write(&s.toClient, s.client, msg) //nolint:errcheck // the connection is closing
		}
		return
	}
	// The front's own messages take sequence numbers far above a client's
	// and Delve's, which count from 1.
	out, _ := json.Marshal(map[string]any{"seq": seq, "type": "event", "event": "output",
		"body": map[string]any{"category": "console", "output": notice(pid)}})
	s.write(&s.toClient, s.client, out) //nolint:errcheck // a closed connection ends the session
	req, _ := json.Marshal(map[string]any{"seq": seq, "type": "request", "command": "continue", "arguments": map[string]any{"threadId": 1}})
	s.write(&s.toServer, s.server, req) //nolint:errcheck // a closed connection ends the session
}

func (s *dapSession) close() {
	s.client.Close()
	s.server.Close()
}

// rpcSession is a JSON-RPC client's connection (Delve's API v2: GoLand,
// dlv connect, scripts).
type rpcSession struct {
	f              *Front
	client, server net.Conn
	toClient       sync.Mutex
	toServer       sync.Mutex

	// Under f.mu:
	runs map[string][]byte // raw requests by id: Command calls that run the program
	held map[string][]byte // of those, the ones whose answer ("exited") was kept back
	kept map[string][]byte // the answers kept back, by id
}

type rpcRequest struct {
	Method string            `json:"method"`
	Params []json.RawMessage `json:"params"`
	ID     json.RawMessage   `json:"id"`
}

type rpcResponse struct {
	ID     json.RawMessage `json:"id"`
	Result *struct {
		State struct {
			Exited bool `json:"exited"`
		} `json:"State"`
	} `json:"result"`
	Error any `json:"error"`
}

func newRPCSession(f *Front, client, server net.Conn) *rpcSession {
	return &rpcSession{f: f, client: client, server: server, runs: map[string][]byte{}, held: map[string][]byte{}, kept: map[string][]byte{}}
}

func (s *rpcSession) start(in io.Reader) {
	go s.pump(in, s.fromClient, func() { s.server.Close() })
	go s.pump(s.server, s.fromServer, func() { s.client.Close(); s.f.forget(s) })
}

func (s *rpcSession) pump(r io.Reader, handle func([]byte) error, done func()) {
	defer done()
	dec := json.NewDecoder(r)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return
		}
		if handle(raw) != nil {
			return
		}
	}
}

func (s *rpcSession) fromClient(raw []byte) error {
	var req rpcRequest
	if json.Unmarshal(raw, &req) == nil && req.Method == "RPCServer.Command" && len(req.Params) == 1 {
		var cmd struct {
			Name string `json:"name"`
		}
		json.Unmarshal(req.Params[0], &cmd) //nolint:errcheck // not a command that runs
		if runsProgram(cmd.Name) {
			s.f.update(func() { s.runs[string(req.ID)] = raw })
		}
	}
	return s.write(&s.toServer, s.server, raw)
}

// runsProgram reports whether an API command runs the program until it
// stops (continue, next, step...), rather than halting or switching.
func runsProgram(name string) bool {
	switch name {
	case "halt", "switchThread", "switchGoroutine", "":
		return false
	}
	return true
}

func (s *rpcSession) fromServer(raw []byte) error {
	var resp rpcResponse
	if json.Unmarshal(raw, &resp) != nil {
		return s.write(&s.toClient, s.client, raw)
	}
	id := string(resp.ID)
	drop := false
	s.f.update(func() {
		req, ok := s.runs[id]
		if !ok {
			return
		}
		delete(s.runs, id)
		if s.f.holding && exitedAnswer(resp) {
			s.held[id], s.kept[id] = req, raw
			drop = true
		}
	})
	if drop {
		return nil
	}
	return s.write(&s.toClient, s.client, raw)
}

// exitedAnswer reports whether an API answer says the program exited.
func exitedAnswer(r rpcResponse) bool {
	if r.Result != nil && r.Result.State.Exited {
		return true
	}
	msg, _ := r.Error.(string)
	return strings.Contains(msg, "has exited")
}

func (s *rpcSession) write(mu *sync.Mutex, to net.Conn, raw []byte) error {
	mu.Lock()
	defer mu.Unlock()
	_, err := to.Write(append(bytes.TrimSpace(raw), '\n'))
	return err
}

func (s *rpcSession) state() (running, held bool) { return len(s.runs) > 0, len(s.held) > 0 }

func (s *rpcSession) resume(_ int, ended bool) {
	s.f.mu.Lock()
	held, kept := s.held, s.kept
	s.held, s.kept = map[string][]byte{}, map[string][]byte{}
	if !ended {
		for id, req := range held {
			s.runs[id] = req
		}
	}
	s.f.changedLocked()
	s.f.mu.Unlock()
	for id := range held {
		if ended {
			s.write(&s.toClient, s.client, kept[id]) //nolint:errcheck // the connection is closing
		} else {
			s.write(&s.toServer, s.server, held[id]) //nolint:errcheck // a closed connection ends the session
		}
	}
}

func (s *rpcSession) close() {
	s.client.Close()
	s.server.Close()
}
