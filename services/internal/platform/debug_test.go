package platform

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// TestListeners: the debug listener is on loopback only, or none when off;
// a listener that fails is named, and those opened before it are closed.
func TestListeners(t *testing.T) {
	var open Listeners
	if lis := open.Debug(t.Context(), DebugPort{}); lis != nil {
		t.Fatalf("Debug(off) = %v, want no listener", lis.Addr())
	}
	metrics := open.Listen(t.Context(), "metrics", 0)
	debug := open.Debug(t.Context(), DebugPort{Port: 0, On: true})
	core, logs := observer.New(zapcore.InfoLevel)
	if err := open.Err(zap.New(core)); err != nil {
		t.Fatal(err)
	}
	defer metrics.Close()
	defer debug.Close()
	if ip := debug.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("debug listener on %v, want loopback only", ip)
	}
	fields := logs.FilterMessage("listening").All()[0].ContextMap()
	if fields["metrics"] != metrics.Addr().String() || fields["debug"] != debug.Addr().String() {
		t.Errorf("listening line %v, want the metrics and debug addresses", fields)
	}

	// The debug port is taken: the error names the debug listener, and the
	// metrics listener opened before it is closed.
	var again Listeners
	first := again.Listen(t.Context(), "metrics", 0)
	taken := DebugPort{Port: debug.Addr().(*net.TCPAddr).Port, On: true}
	if lis := again.Debug(t.Context(), taken); lis != nil {
		t.Fatal("a second debug listener on a taken port succeeded")
	}
	err := again.Err(zap.NewNop())
	if err == nil || !strings.HasPrefix(err.Error(), "listen for debug: ") {
		t.Errorf("Err = %v, want the debug listener named", err)
	}
	if _, err := first.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the metrics listener opened before the failure accepts (%v), want it closed", err)
	}
}

func TestDebugServer(t *testing.T) {
	var open Listeners
	lis := open.Debug(t.Context(), DebugPort{On: true})
	if err := open.Err(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	d := NewDebugServer(zaptest.NewLogger(t))
	active := make(chan struct{}, 16) // a request has arrived
	d.srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateActive {
			select {
			case active <- struct{}{}:
			default:
			}
		}
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(lis) }()
	base := "http://" + lis.Addr().String()
	get := func(path string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	if code, body := get("/debug/pprof/"); code != http.StatusOK || !bytes.Contains(body, []byte("goroutine")) {
		t.Errorf("/debug/pprof/ = %d, want 200 with the profile index", code)
	}
	// Profiles come as gzipped protobuf, which go tool pprof reads.
	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/goroutine"} {
		if code, body := get(path); code != http.StatusOK || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
			t.Errorf("%s = %d, %d bytes; want 200 and a gzipped profile", path, code, len(body))
		}
	}
	if code, _ := get("/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the debug listener = %d, want 404: it serves pprof only", code)
	}

	// Close cuts a profile in progress instead of waiting for it.
	for len(active) > 0 {
		<-active
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/profile?seconds=30", nil)
	cut := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		cut <- err
	}()
	<-active
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
	if err := <-cut; err == nil {
		t.Error("a 30s profile in progress was not cut by Close")
	}
}
