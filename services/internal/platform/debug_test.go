package platform

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
)

func TestDebugPortDecode(t *testing.T) {
	tests := []struct {
		in      string
		want    DebugPort
		wantErr bool
	}{
		{in: "", want: DebugPort{}},
		{in: "6060", want: DebugPort{Port: 6060, On: true}},
		{in: "0", want: DebugPort{Port: 0, On: true}},
		{in: "-1", want: DebugPort{Port: -1, On: true}}, // Check refuses it
		{in: "six", wantErr: true},
		{in: "60 60", wantErr: true},
	}
	for _, tt := range tests {
		var got DebugPort
		err := got.Decode(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Decode(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("Decode(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestDebugPortCheck(t *testing.T) {
	others := map[string]int{"X_GRPC_PORT": 20000, "X_METRICS_PORT": 0}
	tests := []struct {
		p       DebugPort
		wantErr string
	}{
		{p: DebugPort{}, wantErr: ""},
		{p: DebugPort{Port: 20000}, wantErr: ""}, // off: the number means nothing
		{p: DebugPort{Port: 6060, On: true}, wantErr: ""},
		{p: DebugPort{Port: 0, On: true}, wantErr: ""}, // any free port, like X_METRICS_PORT=0
		{p: DebugPort{Port: 20000, On: true}, wantErr: "X_DEBUG_PORT=20000: the same port as X_GRPC_PORT"},
		{p: DebugPort{Port: 70000, On: true}, wantErr: "X_DEBUG_PORT=70000: not a TCP port (0-65535, 0 for any free port)"},
	}
	for _, tt := range tests {
		err := tt.p.Check("X_DEBUG_PORT", others)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.wantErr {
			t.Errorf("Check(%+v) = %q, want %q", tt.p, got, tt.wantErr)
		}
	}
}

func TestListenDebug(t *testing.T) {
	lis, err := ListenDebug(t.Context(), DebugPort{})
	if lis != nil || err != nil {
		t.Fatalf("ListenDebug(off) = %v, %v; want no listener", lis, err)
	}
	lis, err = ListenDebug(t.Context(), DebugPort{Port: 0, On: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if ip := lis.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("debug listener on %v, want loopback only", ip)
	}
	// The port is taken: a second listener on it fails with the listener named.
	taken := DebugPort{Port: lis.Addr().(*net.TCPAddr).Port, On: true}
	if l2, err := ListenDebug(t.Context(), taken); err == nil {
		l2.Close()
		t.Error("a second debug listener on a taken port succeeded")
	} else if !strings.HasPrefix(err.Error(), "listen for debug: ") {
		t.Errorf("error %q does not say which listener failed", err)
	}
}

func TestDebugServer(t *testing.T) {
	lis, err := ListenDebug(t.Context(), DebugPort{On: true})
	if err != nil {
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
