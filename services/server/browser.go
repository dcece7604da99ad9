package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"example.com/grpc-metrics/services/internal/platform"
)

// A browser that opens the gRPC port (the Tilt UI's link to it, a curl)
// sends an HTTP/1 request, and grpc-go closes the connection after reading
// the first 24 bytes of it. Closing a socket with unread data makes the
// kernel send a reset, and kubectl's port-forwarder (so Tilt's) treats a
// reset from the pod as the loss of the whole tunnel: grpcurl through it
// fails until the tunnel is rebuilt. So the gRPC listener looks at the first
// bytes of each connection: an HTTP/1 request gets a short page on how to
// call the port, read whole and answered before a clean close; anything
// else is grpc-go's, as before.

// browserTimeout bounds the exchange with a browser: reading its request,
// writing the page, and waiting for it to close its end.
const browserTimeout = 5 * time.Second

// http1Methods are the first four bytes of an HTTP/1 request line, as
// cmux's HTTP1Fast matcher reads them. The HTTP/2 preface ("PRI * HTTP/2.0")
// is not among them.
var http1Methods = []string{"GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "TRAC", "CONN"}

// answerBrowsers wraps the gRPC listener: its connections answer an HTTP/1
// request themselves (see above) and are otherwise grpc-go's.
func answerBrowsers(lis net.Listener, log *zap.Logger) net.Listener {
	return &browserListener{Listener: lis, log: log}
}

type browserListener struct {
	net.Listener
	log *zap.Logger
}

func (l *browserListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffedConn{Conn: c, log: l.log}, nil
}

// sniffedConn is a gRPC connection until its first bytes show an HTTP/1
// request; then it is answered here, and grpc-go reads the end of it.
// grpc-go writes its SETTINGS frame before it reads the client's preface:
// the connection holds what is written until that first read, so a browser
// gets its page alone. An HTTP/2 client sends its preface without waiting
// for the server's, so holding them adds no round trip; on loopback a new
// connection costs about 60µs more CPU, a call on an open one nothing that
// BenchmarkGRPCPort can tell apart.
type sniffedConn struct {
	net.Conn
	log      *zap.Logger
	sniffed  atomic.Bool // the first read is done: reads and writes go through
	mu       sync.Mutex  // held by the first read; guards held
	held     []byte      // written before the first read
	answered atomic.Bool // the connection is the browser's answer's: Close leaves it open
}

func (c *sniffedConn) Write(b []byte) (int, error) {
	if !c.sniffed.Load() {
		c.mu.Lock()
		if !c.sniffed.Load() {
			c.held = append(c.held, b...)
			c.mu.Unlock()
			return len(b), nil
		}
		c.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *sniffedConn) Read(b []byte) (int, error) {
	if c.sniffed.Load() {
		return c.Conn.Read(b)
	}
	n, err := io.ReadAtLeast(c.Conn, b, min(4, len(b)))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sniffed.Store(true)
	if n >= 4 && isHTTP1(b[:n]) {
		c.answered.Store(true)
		go answerBrowser(c.Conn, bytes.Clone(b[:n]), c.log)
		return 0, io.EOF
	}
	if len(c.held) > 0 {
		if _, werr := c.Conn.Write(c.held); werr != nil && err == nil {
			err = werr
		}
		c.held = nil
	}
	return n, err
}

func (c *sniffedConn) Close() error {
	if c.answered.Load() {
		return nil
	}
	return c.Conn.Close()
}

// SyscallConn keeps the socket options within reach of grpc-go.
func (c *sniffedConn) SyscallConn() (syscall.RawConn, error) { return platform.RawConn(c.Conn) }

func isHTTP1(b []byte) bool {
	for _, m := range http1Methods {
		if bytes.HasPrefix(b, []byte(m)) {
			return true
		}
	}
	return false
}

// answerBrowser reads the HTTP/1 request that begins with head, answers it
// with a page on how to call the gRPC port ("Connection: close"), and
// closes the connection once the peer has closed its own, or after
// browserTimeout, so that nothing unread is left to reset. Where c can
// (a plain TCP connection; not a worker's tracked one) it closes its own
// end for writing first, as net/http does.
func answerBrowser(c net.Conn, head []byte, log *zap.Logger) {
	defer c.Close()                               //nolint:errcheck // the page is written or the peer is gone
	c.SetDeadline(time.Now().Add(browserTimeout)) //nolint:errcheck // the reads and writes below report it
	r := bufio.NewReader(io.MultiReader(bytes.NewReader(head), c))
	req, err := http.ReadRequest(r)
	if err != nil {
		log.Debug("not an HTTP request on the gRPC port", zap.Error(err))
		return
	}
	io.Copy(io.Discard, req.Body) //nolint:errcheck // whatever arrives in time is read
	page := grpcPage(req.Host)
	resp := &http.Response{
		StatusCode:    http.StatusOK,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Request:       req,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		ContentLength: int64(len(page)),
		Body:          io.NopCloser(strings.NewReader(page)),
		Close:         true,
	}
	if err := resp.Write(c); err != nil {
		log.Debug("answer a browser on the gRPC port", zap.Error(err))
		return
	}
	log.Info("answered an HTTP request on the gRPC port with how to call it", zap.String("path", req.URL.Path))
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // the close below ends it anyway
	}
	// The response says Connection: close, so the browser closes its end.
	io.Copy(io.Discard, r) //nolint:errcheck // until the peer closes, or the deadline
}

// grpcPage is the page a browser gets from the gRPC port at host (as the
// browser named it: the forward's localhost:20000, say).
func grpcPage(host string) string {
	if host == "" {
		host = "localhost:20000"
	}
	return fmt.Sprintf(`This is the echo server's gRPC port, not a web page. Call it with grpcurl:

  grpcurl -plaintext %[1]s list
  grpcurl -plaintext -d '{"name":"hi"}' %[1]s foo.Foo/echo
  grpcurl -plaintext %[1]s grpc.health.v1.Health/Check

The server's metrics are on its metrics port, at /metrics.
`, host)
}
