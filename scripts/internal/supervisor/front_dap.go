package supervisor

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"sync"

	"github.com/google/go-dap"
)

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
	injected      map[int]struct{} // seq of the requests the front sent itself: their responses go to no one
	seq           int              // of the messages the front makes itself
	pauses        map[int]bool     // the client's pauses not answered yet, by seq
	ended         bool             // the connection is gone
}

// dapMessage is the part of a DAP message the front reads.
type dapMessage struct {
	Seq        int             `json:"seq"`
	Type       string          `json:"type"`
	Command    string          `json:"command"`
	Event      string          `json:"event"`
	RequestSeq int             `json:"request_seq"`
	Arguments  json.RawMessage `json:"arguments"`
}

// dapRuns are the requests after which the program runs until it stops.
var dapRuns = map[string]bool{"continue": true, "next": true, "stepIn": true, "stepOut": true, "stepBack": true, "reverseContinue": true, "configurationDone": true}

func newDAPSession(f *Front, client, server net.Conn) *dapSession {
	return &dapSession{f: f, client: client, server: server, injected: map[int]struct{}{}, seq: 1 << 30, pauses: map[int]bool{}}
}

func (s *dapSession) start(in io.Reader) {
	go s.pump(bufio.NewReader(in), s.fromClient, func() { s.server.Close() })
	go s.pump(bufio.NewReader(s.server), s.fromServer, func() {
		s.client.Close()
		s.f.update(func() { s.ended = true })
		s.f.forget(s)
	})
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
			if m.Command == "pause" {
				s.pauses[m.Seq] = true
			}
		})
		if m.Command == "pause" {
			go s.pauseAgain(m.Seq, m.Arguments)
		}
	}
	return s.write(&s.toServer, s.server, msg)
}

// pauseAgain sends Delve a pause of the front's own every haltRetry until
// the client's pause seq is answered or the connection ends: the same race
// as the API's halt (rpcSession.haltAgain).
func (s *dapSession) pauseAgain(seq int, args json.RawMessage) {
	s.f.repeat(func() []byte {
		if !s.pauses[seq] || s.ended {
			return nil
		}
		s.seq++
		s.injected[s.seq] = struct{}{}
		req, _ := json.Marshal(map[string]any{"seq": s.seq, "type": "request", "command": "pause", "arguments": args})
		return req
	}, func(req []byte) error { return s.write(&s.toServer, s.server, req) })
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
		delete(s.pauses, m.RequestSeq)
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
