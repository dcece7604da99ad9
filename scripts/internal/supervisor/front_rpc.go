package supervisor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

// rpcSession is a JSON-RPC client's connection (Delve's API v2: GoLand,
// dlv connect, scripts).
type rpcSession struct {
	f              *Front
	client, server net.Conn
	toClient       sync.Mutex
	toServer       sync.Mutex

	// Under f.mu:
	runs  map[string][]byte // raw requests by id: Command calls that run the program
	held  map[string][]byte // of those, the ones whose answer ("exited") was kept back
	kept  map[string][]byte // the answers kept back, by id
	halts map[string]bool   // the debugger's halts not answered yet, by id
	own   map[string]bool   // the front's own halts not answered yet, by id
	ended bool              // the connection is gone
	seq   int               // the front's own request ids
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
	return &rpcSession{f: f, client: client, server: server, runs: map[string][]byte{}, held: map[string][]byte{}, kept: map[string][]byte{},
		halts: map[string]bool{}, own: map[string]bool{}}
}

func (s *rpcSession) start(in io.Reader) {
	go s.pump(in, s.fromClient, func() { s.server.Close() })
	go s.pump(s.server, s.fromServer, func() {
		s.client.Close()
		s.f.update(func() { s.ended = true })
		s.f.forget(s)
	})
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
		if cmd.Name == "halt" {
			id := string(req.ID)
			s.f.update(func() { s.halts[id] = true })
			go s.haltAgain(id)
		}
	}
	return s.write(&s.toServer, s.server, raw)
}

// haltAgain sends Delve a halt of the front's own every haltRetry until
// the debugger's halt id is answered or the connection ends.
func (s *rpcSession) haltAgain(id string) {
	s.f.repeat(func() []byte {
		if !s.halts[id] || s.ended {
			return nil
		}
		s.seq++
		own := fmt.Sprintf("%q", fmt.Sprintf("front-halt-%d", s.seq))
		s.own[own] = true
		s.f.Log.Debug("a debugger's halt waits: halting again")
		return []byte(`{"method":"RPCServer.Command","params":[{"name":"halt"}],"id":` + own + `}`)
	}, func(req []byte) error { return s.write(&s.toServer, s.server, req) })
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
		delete(s.halts, id)
		if s.own[id] {
			delete(s.own, id)
			drop = true
			return
		}
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
