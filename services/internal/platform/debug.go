package platform

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
)

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
