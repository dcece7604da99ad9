package platform

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

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

// DebugActor serves pprof on lis until the program stops; none when lis is
// nil (the debug listener is off). After a hand-over (ctx, the program's)
// the profiles in progress may finish, for up to debugHandoverTimeout.
func DebugActor(ctx context.Context, log *zap.Logger, lis net.Listener) Actor {
	if lis == nil {
		return Actor{}
	}
	d := NewDebugServer(log)
	return Actor{Run: func() error { return d.Serve(lis) }, Stop: func(error) {
		if HandedOver(ctx) {
			retireHTTP(d.srv, lis, debugHandoverTimeout)
		}
		d.Close() //nolint:errcheck // closing listeners only
	}}
}

// debugHandoverTimeout bounds how long a retired worker waits for its
// profiles: one of pprof's 30-second CPU profiles finishes.
const debugHandoverTimeout = 35 * time.Second
