package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"

	"go.uber.org/zap"
)

// DebugPort is the TCP port of a program's debug listener, which serves
// net/http/pprof. Unlike the other ports it may be left unset: the listener
// is off unless its variable names a port (0 for any free one).
type DebugPort struct {
	Port int
	On   bool
}

// Decode reads the variable's value: a port, or nothing for no listener.
func (p *DebugPort) Decode(v string) error {
	if v == "" {
		*p = DebugPort{}
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return errors.New("not a whole number (a TCP port, or empty for no debug listener)")
	}
	*p = DebugPort{Port: n, On: true}
	return nil
}

// String is the port, or "off".
func (p DebugPort) String() string {
	if !p.On {
		return "off"
	}
	return strconv.Itoa(p.Port)
}

// Check reports whether p is usable next to the program's other ports
// (keyed by variable name): a port in range, and not one of theirs.
func (p DebugPort) Check(key string, others map[string]int) error {
	if !p.On {
		return nil
	}
	if err := CheckPort(key, p.Port); err != nil {
		return err
	}
	for k, port := range others {
		if port == p.Port && port != 0 {
			return &FieldError{Key: key, Value: p.Port, Reason: "the same port as " + k}
		}
	}
	return nil
}

// ListenDebug opens the debug listener on the loopback interface only:
// profiles reveal the program's insides, so they are reached through a
// port-forward (kubectl's and Tilt's connect to the pod's loopback), never
// from the pod network. It returns nil when p is off.
func ListenDebug(ctx context.Context, p DebugPort) (net.Listener, error) {
	if !p.On {
		return nil, nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen for debug: %w", err)
	}
	return lis, nil
}

// DebugServer serves net/http/pprof under /debug/pprof/ on its own listener.
type DebugServer struct {
	srv *http.Server
}

// NewDebugServer builds the pprof server. It sets no write timeout: a CPU
// profile or a trace streams for as long as the caller asks.
func NewDebugServer(log *zap.Logger) *DebugServer {
	mux := http.NewServeMux()
	// The routes net/http/pprof registers on the default mux, which no
	// listener of ours serves.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &DebugServer{srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          zap.NewStdLog(log.Named("debug")),
	}}
}

// Serve serves on lis until Close; it returns nil after Close.
func (d *DebugServer) Serve(lis net.Listener) error { return serveHTTP(d.srv, lis, "debug") }

// Close stops the listener and cuts the profiles in progress: a restart
// must not wait for a 30-second profile to finish.
func (d *DebugServer) Close() error { return d.srv.Close() }
