package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the test binary as the program when HOSTRUN_TEST_PROGRAM
// names a folder: it serves /readyz on the socket it is given
// (LISTEN_FDS), or else on the port in HOSTRUN_TEST_PORT, reports READY=1
// when asked to (NOTIFY_SOCKET), and writes each signal it gets to the
// folder's file "signals"; SIGHUP and SIGTERM end it.
func TestMain(m *testing.M) {
	if dir := os.Getenv("HOSTRUN_TEST_PROGRAM"); dir != "" {
		testProgram(dir)
		return
	}
	os.Exit(m.Run())
}

func testProgram(dir string) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	var lis net.Listener
	var err error
	if os.Getenv("LISTEN_FDS") == "1" {
		lis, err = net.FileListener(os.NewFile(3, "given"))
	} else {
		lis, err = net.Listen("tcp", "127.0.0.1:"+os.Getenv("HOSTRUN_TEST_PORT"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)     //nolint:errcheck // the test reads it
	go http.Serve(lis, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})) //nolint:errcheck // ends with the process
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		if c, err := net.Dial("unixgram", addr); err == nil {
			c.Write([]byte("READY=1")) //nolint:errcheck // the supervisor then kills it
			c.Close()
		}
	}
	for sig := range sigs {
		f, _ := os.OpenFile(filepath.Join(dir, "signals"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		fmt.Fprintln(f, sig)
		f.Close()
		os.Exit(0)
	}
}

// fakeKubectl is a kubectl that records its calls in dir/calls (one line
// each, an apply's input on the next), knows the Service while dir/service
// exists, lists dir/slices for any get of endpointslices, and answers a get
// of a Service and its slice by name with dir/objects.
const fakeKubectl = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >>"$dir/calls"
case "$*" in
  *" apply -f -") cat >>"$dir/calls"; echo >>"$dir/calls" ;;
  *"get service/"*) [ -f "$dir/objects" ] && cat "$dir/objects" ;;
  *"get service"*) [ -f "$dir/service" ] && printf uid-1 ;;
  *"get endpointslices"*) cat "$dir/slices" ;;
esac
exit 0
`

type runTest struct {
	t       *testing.T
	dir     string
	cfg     *runConfig
	stopRun context.CancelFunc
	done    chan error
}

func startRun(t *testing.T) *runTest {
	t.Helper()
	return startRunWith(t, true)
}

// startRunWith starts hostrun run; with command false it follows a
// program that the test starts itself (r.startProgram), as an IDE would.
func startRunWith(t *testing.T, command bool) *runTest {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("kubectl", fakeKubectl, 0o755)
	write("service", "", 0o644)
	write("slices", `{"items":[]}`, 0o644)
	write("objects", objects("uid-1", "uid-1"), 0o644)
	write("binary", "1", 0o644)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(lis.Addr().(*net.TCPAddr).Port)
	lis.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOSTRUN_TEST_PROGRAM", dir)
	t.Setenv("HOSTRUN_TEST_PORT", port)
	args := []string{
		"--context", "kind-x", "--namespace", "echo", "--kubectl", filepath.Join(dir, "kubectl"),
		"--address", "10.244.0.1", "--ready", "http://127.0.0.1:" + port + "/readyz",
		"--slice", "server-service=grpc:20000", "--slice", "server-metrics-service=metrics:9000",
		"--handback", filepath.Join(dir, "handback"), "--serving", filepath.Join(dir, "serving"),
		"--replaces", "deployment/server",
	}
	if command {
		args = append(args, "--listen", "http=127.0.0.1:"+port, "--binary", filepath.Join(dir, "binary"), "--", self)
	}
	cfg, err := parseRun(args, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runTest{t: t, dir: dir, cfg: cfg, stopRun: cancel, done: make(chan error, 1)}
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- cfg.run(ctx, io.MultiWriter(os.Stderr, log)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("hostrun run did not return")
		}
	})
	return r
}

func (r *runTest) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, name))
	return string(b)
}

func (r *runTest) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("not within 10s: %s\nkubectl calls:\n%s\nsignals: %q", what, r.read("calls"), r.read("signals"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *runTest) killProgram() {
	r.t.Helper()
	pid, err := strconv.Atoi(r.read("pid"))
	if err != nil {
		r.t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
}

func (r *runTest) newBinary(content string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "binary"), []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// The slices are made once the program answers, name this machine's
// address and their Services, and are owned by them; a new build is handed
// over with SIGHUP; a stop withdraws the slices before the program gets
// SIGTERM.
func TestRunPublishesHandsOverAndWithdraws(t *testing.T) {
	r := startRun(t)
	r.eventually("the slices are applied", func() bool { return strings.Contains(r.read("calls"), `"kind":"List"}`) })
	calls := r.read("calls")
	if strings.Contains(calls, " delete endpointslice ") {
		t.Errorf("a start withdrew slices (those left behind name this machine, whose sockets listen); calls:\n%s", calls)
	}
	for _, want := range []string{
		`"addresses":["10.244.0.1"]`, `"conditions":{"ready":true,"serving":true,"terminating":false}`,
		`"endpointslice.kubernetes.io/managed-by":"hostrun.grpc-metrics.example.com"`, `"kubernetes.io/service-name":"server-service"`,
		`"ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"server-service","uid":"uid-1"}]`,
		`"ports":[{"name":"grpc","port":20000,"protocol":"TCP"}]`, `"ports":[{"name":"metrics","port":9000,"protocol":"TCP"}]`,
	} {
		if !strings.Contains(calls, want) {
			t.Errorf("the applied slices lack %s:\n%s", want, calls)
		}
	}
	if _, err := os.Stat(filepath.Join(r.dir, "serving")); err != nil {
		t.Errorf("the serving file for Tilt's probe: %v", err)
	}
	// The Deployment an earlier tilt up left goes once this machine is in
	// the slices.
	r.eventually("the replaced Deployment is deleted", func() bool {
		c := r.read("calls")
		i, j := strings.Index(c, `"kind":"List"}`), strings.Index(c, "delete deployment/server --ignore-not-found --wait=false")
		return i >= 0 && j > i
	})

	r.newBinary("22")
	r.eventually("the program gets SIGHUP", func() bool { return r.read("signals") == "hangup\n" })

	r.stopRun()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil
	calls = r.read("calls")
	if !strings.HasSuffix(calls, "delete endpointslice --ignore-not-found --wait=false server-service-hostrun server-metrics-service-hostrun\n") {
		t.Errorf("the stop did not end with withdrawing the slices:\n%s", calls)
	}
	if got := r.read("signals"); got != "hangup\nterminated\n" {
		t.Errorf("the program's signals %q, want a hang-up then SIGTERM", got)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "serving")); !os.IsNotExist(err) {
		t.Errorf("the serving file is still there after the stop: %v", err)
	}
}

// Going back to the cluster (the handback file exists), the slices stay,
// and the program serves, until the Services have a ready pod.
func TestRunHandsBackOnceThePodsAreReady(t *testing.T) {
	r := startRun(t)
	r.eventually("the slices are applied", func() bool { return strings.Contains(r.read("calls"), `"kind":"List"}`) })
	if err := os.WriteFile(filepath.Join(r.dir, "handback"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.stopRun()
	r.eventually("hostrun looks for the Services' pods", func() bool {
		return strings.Count(r.read("calls"), "get endpointslices") >= 3
	})
	if strings.Contains(r.read("signals"), "terminated") || strings.HasSuffix(r.read("calls"), "server-metrics-service-hostrun\n") {
		t.Fatalf("the slices were withdrawn or the program stopped before any pod was ready:\n%s", r.read("calls"))
	}
	if err := os.WriteFile(filepath.Join(r.dir, "slices"), []byte(`{"items":[{"endpoints":[{"conditions":{"ready":true}}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("hostrun did not stop once the pods were ready")
	}
	if !strings.HasSuffix(r.read("calls"), "server-metrics-service-hostrun\n") || r.read("signals") != "terminated\n" {
		t.Errorf("after the pods were ready: calls\n%s\nsignals %q", r.read("calls"), r.read("signals"))
	}
}

// With no pod ready within handbackTimeout, the hand-back gives up within
// the stop's bound, saying what it waited for and what to do.
func TestRunGivesUpTheHandBack(t *testing.T) {
	defer func(d time.Duration) { handbackTimeout = d }(handbackTimeout)
	handbackTimeout = time.Second
	r := startRun(t)
	r.eventually("the slices are applied", func() bool { return strings.Contains(r.read("calls"), `"kind":"List"}`) })
	if err := os.WriteFile(filepath.Join(r.dir, "handback"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.stopRun()
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("hostrun did not give up the hand-back")
	}
	log := r.read("log")
	for _, want := range []string{"no ready pod of server-service yet after 1s", "resource's log in Tilt", "tilt args -- --local server"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
	if !strings.HasSuffix(r.read("calls"), "server-metrics-service-hostrun\n") || r.read("signals") != "terminated\n" {
		t.Errorf("after giving up: calls\n%s\nsignals %q", r.read("calls"), r.read("signals"))
	}
}

// A program that exits while it serves is started again on the same
// socket, which stayed open (its calls wait meanwhile): the slices stay.
// One whose build cannot start has its slices withdrawn (nothing answers
// at the address) until the next build starts.
func TestRunRestartsAfterAnExit(t *testing.T) {
	r := startRun(t)
	r.eventually("the slices are applied", func() bool { return strings.Count(r.read("calls"), `"kind":"List"}`) == 1 })
	before := r.read("pid")
	r.killProgram() // as a crash would end it
	r.eventually("the program is started again", func() bool { p := r.read("pid"); return p != "" && p != before })
	r.eventually("it answers", func() bool { return r.cfg.answers(&http.Client{Timeout: time.Second}) })
	if n := strings.Count(r.read("calls"), "delete endpointslice"); n != 0 {
		t.Errorf("the slices were withdrawn %d times, want none while the socket stays open", n)
	}
}

// Without a COMMAND, hostrun follows a program started by another (an
// IDE): the slices are made once it answers, withdrawn once its port
// refuses connections, and made again when it is back.
func TestRunFollowsAProgramStartedElsewhere(t *testing.T) {
	r := startRunWith(t, false)
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(r.read("calls"), "apply") {
		t.Fatalf("slices made before any program answers:\n%s", r.read("calls"))
	}
	for round := 1; round <= 2; round++ {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(self)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.eventually("the slices are made", func() bool { return strings.Count(r.read("calls"), "apply -f -") == round })
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() //nolint:errcheck // killed
		r.eventually("the slices are withdrawn", func() bool { return strings.Count(r.read("calls"), "delete endpointslice") == round+1 })
	}
}

// objects is kubectl's answer to a get of the Services and their slices:
// each Service with UID service and each slice owned by UID owner; ""
// leaves them out.
func objects(service, owner string) string {
	var items []string
	for _, name := range []string{"server-service", "server-metrics-service"} {
		if service != "" {
			items = append(items, `{"kind":"Service","metadata":{"name":"`+name+`","uid":"`+service+`"}}`)
		}
		if owner != "" {
			items = append(items, `{"kind":"EndpointSlice","metadata":{"name":"`+name+`-hostrun","uid":"s","ownerReferences":[{"uid":"`+owner+`"}]}}`)
		}
	}
	if len(items) == 0 {
		return ""
	}
	return `{"kind":"List","items":[` + strings.Join(items, ",") + `]}`
}

// Made slices are looked at every recheck: one that is gone, or owned by
// an older Service (disabled and enabled in Tilt: the garbage collector
// deletes it), is made again, with the Service's UID as it is now.
func TestRunMakesSlicesAgain(t *testing.T) {
	for _, tt := range []struct {
		what, objects string
	}{
		{"a slice deleted", objects("uid-1", "")},
		{"the Service made again", objects("uid-1", "uid-0")},
	} {
		t.Run(tt.what, func(t *testing.T) {
			r := startRun(t)
			r.eventually("the slices are applied", func() bool { return strings.Count(r.read("calls"), `"kind":"List"}`) == 1 })
			r.eventually("the slices are looked at", func() bool {
				return strings.Contains(r.read("calls"), "get service/server-service endpointslice/server-service-hostrun service/server-metrics-service endpointslice/server-metrics-service-hostrun")
			})
			time.Sleep(recheck + 500*time.Millisecond)
			if n := strings.Count(r.read("calls"), `"kind":"List"}`); n != 1 {
				t.Fatalf("slices applied %d times while they were there and current", n)
			}
			if err := os.WriteFile(filepath.Join(r.dir, "objects"), []byte(tt.objects), 0o644); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			r.eventually("the slices are made again", func() bool { return strings.Count(r.read("calls"), `"kind":"List"}`) == 2 })
			if took := time.Since(began); took > recheck+time.Second {
				t.Errorf("made again %v after, want within %v", took, recheck+time.Second)
			}
		})
	}
}
