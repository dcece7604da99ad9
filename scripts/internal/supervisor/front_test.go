package supervisor

import (
	"bufio"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-dap"
	"go.uber.org/zap/zaptest"
)

// frontHarness is a Front before a fake Delve: the test plays the debugger
// (client) and Delve (server), one connection each.
type frontHarness struct {
	f              *Front
	client, server net.Conn
	fromClient     *bufio.Reader // what the server side reads
	fromServer     *bufio.Reader // what the client side reads
}

func newFrontHarness(t *testing.T) *frontHarness {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	delve, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { delve.Close() })
	f := NewFront(l, false, zaptest.NewLogger(t))
	f.SetDelve(func() (net.Conn, error) { return net.Dial("tcp", delve.Addr().String()) })
	go f.Serve()
	t.Cleanup(f.Close)
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &frontHarness{f: f, client: client, fromServer: bufio.NewReader(client),
		server: acceptLater(t, delve)}
}

// acceptLater accepts the front's connection to the fake Delve once it
// comes (the front dials when the client's first bytes arrive).
func acceptLater(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	return &lazyConn{t: t, l: l}
}

type lazyConn struct {
	net.Conn
	t *testing.T
	l net.Listener
}

func (c *lazyConn) conn() net.Conn {
	if c.Conn == nil {
		if err := c.l.(*net.TCPListener).SetDeadline(time.Now().Add(wait)); err != nil {
			c.t.Fatal(err)
		}
		conn, err := c.l.Accept()
		if err != nil {
			c.t.Fatalf("the front did not connect to Delve: %v", err)
		}
		c.t.Cleanup(func() { conn.Close() })
		c.Conn = conn
	}
	return c.Conn
}

func (c *lazyConn) Read(b []byte) (int, error)        { return c.conn().Read(b) }
func (c *lazyConn) Write(b []byte) (int, error)       { return c.conn().Write(b) }
func (c *lazyConn) SetReadDeadline(t time.Time) error { return c.conn().SetReadDeadline(t) }

func (h *frontHarness) reader() *bufio.Reader {
	if h.fromClient == nil {
		h.fromClient = bufio.NewReader(h.server)
	}
	return h.fromClient
}

// dapMsg writes a DAP message to w.
func dapMsg(t *testing.T, w net.Conn, m map[string]any) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := dap.WriteBaseMessage(w, b); err != nil {
		t.Fatal(err)
	}
}

// readDAP reads the next DAP message from r, within wait.
func readDAP(t *testing.T, conn net.Conn, r *bufio.Reader) map[string]any {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(wait))
	b, err := dap.ReadBaseMessage(r)
	if err != nil {
		t.Fatalf("reading DAP: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFrontKeepsDAPSessionAcrossHandOver: while a hand-over holds, Delve's
// exited and terminated events do not reach the IDE; Resume sends Delve a
// continue on the IDE's behalf (whose answer the IDE does not see) and the
// IDE a console line, and the next stop reaches the IDE as usual.
func TestFrontKeepsDAPSessionAcrossHandOver(t *testing.T) {
	h := newFrontHarness(t)
	dapMsg(t, h.client, map[string]any{"seq": 5, "type": "request", "command": "continue", "arguments": map[string]any{"threadId": 1}})
	if m := readDAP(t, h.server, h.reader()); m["command"] != "continue" {
		t.Fatalf("Delve got %v, want the IDE's continue", m)
	}
	dapMsg(t, h.server, map[string]any{"seq": 9, "type": "response", "request_seq": 5, "command": "continue", "success": true})
	if m := readDAP(t, h.client, h.fromServer); m["type"] != "response" {
		t.Fatalf("the IDE got %v, want the continue's response", m)
	}

	h.f.Hold()
	resumed := make(chan int, 1)
	go func() { n, _ := h.f.Resume(77); resumed <- n }()
	select {
	case n := <-resumed:
		t.Fatalf("Resume returned %d before the IDE's run saw the old process end", n)
	case <-time.After(quiet):
	}
	dapMsg(t, h.server, map[string]any{"seq": 10, "type": "event", "event": "exited", "body": map[string]any{"exitCode": 0}})
	dapMsg(t, h.server, map[string]any{"seq": 11, "type": "event", "event": "terminated"})
	select {
	case n := <-resumed:
		if n != 1 {
			t.Errorf("Resume = %d, want the IDE's session resumed", n)
		}
	case <-time.After(wait):
		t.Fatal("Resume did not return once the run had ended")
	}
	injected := readDAP(t, h.server, h.reader())
	if injected["command"] != "continue" || injected["type"] != "request" {
		t.Fatalf("Delve got %v, want a continue on the IDE's behalf", injected)
	}
	dapMsg(t, h.server, map[string]any{"seq": 12, "type": "response", "request_seq": injected["seq"], "command": "continue", "success": true})
	dapMsg(t, h.server, map[string]any{"seq": 13, "type": "event", "event": "stopped", "body": map[string]any{"reason": "breakpoint"}})

	out := readDAP(t, h.client, h.fromServer)
	if body, _ := out["body"].(map[string]any); out["event"] != "output" || !strings.Contains(body["output"].(string), "pid 77") {
		t.Fatalf("the IDE got %v first, want the console line about the new process", out)
	}
	if m := readDAP(t, h.client, h.fromServer); m["event"] != "stopped" {
		t.Fatalf("the IDE got %v, want the stop (no exited, terminated or injected response before it)", m)
	}
}

// TestFrontLetsAnEndThroughOutsideAHold: a program that ends with no hand-over
// (a crash) is an end the IDE must see.
func TestFrontLetsAnEndThroughOutsideAHold(t *testing.T) {
	h := newFrontHarness(t)
	dapMsg(t, h.client, map[string]any{"seq": 1, "type": "request", "command": "continue"})
	readDAP(t, h.server, h.reader())
	dapMsg(t, h.server, map[string]any{"seq": 2, "type": "event", "event": "terminated"})
	if m := readDAP(t, h.client, h.fromServer); m["event"] != "terminated" {
		t.Fatalf("the IDE got %v, want terminated", m)
	}
	if n, idle := h.f.Resume(1); n != 0 || idle != 1 {
		t.Errorf("Resume = %d, %d after an end outside a hold, want 0 resumed, 1 attached and idle", n, idle)
	}
}

// rpcLine writes one JSON-RPC message; rpcRead reads one.
func rpcLine(t *testing.T, w net.Conn, s string) {
	t.Helper()
	if _, err := w.Write([]byte(s + "\n")); err != nil {
		t.Fatal(err)
	}
}

func rpcRead(t *testing.T, conn net.Conn, r *bufio.Reader) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(wait))
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading JSON-RPC: %v", err)
	}
	return strings.TrimSpace(line)
}

// TestFrontKeepsAPICallAcrossHandOver: an API call that runs the program
// and answers "exited" during a hold is made again in the new process; its
// caller gets the answer of that one only. Once the front closes, a held
// answer reaches its caller after all.
func TestFrontKeepsAPICallAcrossHandOver(t *testing.T) {
	h := newFrontHarness(t)
	const call = `{"method":"RPCServer.Command","params":[{"name":"continue"}],"id":3}`
	rpcLine(t, h.client, call)
	if got := rpcRead(t, h.server, h.reader()); got != call {
		t.Fatalf("Delve got %s, want %s", got, call)
	}
	h.f.Hold()
	rpcLine(t, h.server, `{"id":3,"result":{"State":{"exited":true,"exitStatus":0}},"error":null}`)
	if n, idle := h.f.Resume(5); n != 1 || idle != 0 {
		t.Fatalf("Resume = %d, %d, want the API caller's run resumed, none idle", n, idle)
	}
	if got := rpcRead(t, h.server, h.reader()); got != call {
		t.Fatalf("Delve got %s after the hand-over, want the call again", got)
	}
	const stopped = `{"id":3,"result":{"State":{"exited":false,"Running":false}},"error":null}`
	rpcLine(t, h.server, stopped)
	if got := rpcRead(t, h.client, h.fromServer); got != stopped {
		t.Fatalf("the caller got %s, want only the new process's answer", got)
	}

	// Held at the end: the caller is told.
	rpcLine(t, h.client, call)
	rpcRead(t, h.server, h.reader())
	h.f.Hold()
	const exited = `{"id":3,"result":{"State":{"exited":true,"exitStatus":2}},"error":null}`
	rpcLine(t, h.server, exited)
	deadline := time.Now().Add(wait)
	for {
		h.f.mu.Lock()
		held := 0
		for s := range h.f.sessions {
			if _, isHeld := s.state(); isHeld {
				held++
			}
		}
		h.f.mu.Unlock()
		if held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exited answer was not held")
		}
		time.Sleep(time.Millisecond)
	}
	h.f.Close()
	if got := rpcRead(t, h.client, h.fromServer); got != exited {
		t.Fatalf("the caller got %s at the close, want the held answer", got)
	}
}

// TestFrontHaltsAgain: a halt that Delve leaves unanswered (it landed just
// before a continue started, which cleared it) is followed by the front's
// own halt, whose answer goes to no one; the debugger gets the answer to
// its halt only.
func TestFrontHaltsAgain(t *testing.T) {
	h := newFrontHarness(t)
	const halt = `{"method":"RPCServer.Command","params":[{"name":"halt"}],"id":7}`
	rpcLine(t, h.client, halt)
	r := h.reader()
	if got := rpcRead(t, h.server, r); got != halt {
		t.Fatalf("Delve got %s, want the halt", got)
	}
	began := time.Now()
	again := rpcRead(t, h.server, r)
	var req rpcRequest
	if err := json.Unmarshal([]byte(again), &req); err != nil || req.Method != "RPCServer.Command" || !strings.Contains(string(req.Params[0]), `"halt"`) || string(req.ID) == "7" {
		t.Fatalf("Delve got %s after an unanswered halt, want a halt of the front's own", again)
	}
	if waited := time.Since(began); waited < haltRetry/2 {
		t.Errorf("the second halt came %v after the first, want about %v", waited, haltRetry)
	}
	// The second halt stops the run: Delve answers both.
	rpcLine(t, h.server, `{"id":`+string(req.ID)+`,"result":{"State":{"Running":false}},"error":null}`)
	const answer = `{"id":7,"result":{"State":{"Running":false}},"error":null}`
	rpcLine(t, h.server, answer)
	if got := rpcRead(t, h.client, h.fromServer); got != answer {
		t.Fatalf("the debugger got %s, want the answer to its own halt only", got)
	}
	// Answered: no more halts of the front's.
	h.server.SetReadDeadline(time.Now().Add(2 * haltRetry))
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("Delve got %s after the halt was answered", line)
	}
}

// TestFrontPausesAgain: DAP's pause has the API's halt race; the front
// pauses again until the IDE's pause is answered, and the IDE gets the
// answer to its own pause only.
func TestFrontPausesAgain(t *testing.T) {
	h := newFrontHarness(t)
	dapMsg(t, h.client, map[string]any{"seq": 4, "type": "request", "command": "pause", "arguments": map[string]any{"threadId": 1}})
	r := h.reader()
	if m := readDAP(t, h.server, r); m["command"] != "pause" || m["seq"] != float64(4) {
		t.Fatalf("Delve got %v, want the IDE's pause", m)
	}
	again := readDAP(t, h.server, r)
	seq, _ := again["seq"].(float64)
	if again["command"] != "pause" || seq == 4 {
		t.Fatalf("Delve got %v after an unanswered pause, want a pause of the front's own", again)
	}
	args, _ := again["arguments"].(map[string]any)
	if args["threadId"] != float64(1) {
		t.Errorf("the front's pause has arguments %v, want the IDE's", again["arguments"])
	}
	dapMsg(t, h.server, map[string]any{"seq": 20, "type": "response", "request_seq": seq, "command": "pause", "success": true})
	dapMsg(t, h.server, map[string]any{"seq": 21, "type": "response", "request_seq": 4, "command": "pause", "success": true})
	if m := readDAP(t, h.client, h.fromServer); m["request_seq"] != float64(4) {
		t.Fatalf("the IDE got %v, want the answer to its own pause only", m)
	}
	h.server.SetReadDeadline(time.Now().Add(2 * haltRetry))
	if _, err := dap.ReadBaseMessage(r); err == nil {
		t.Fatal("Delve got another pause after the IDE's was answered")
	}
}
