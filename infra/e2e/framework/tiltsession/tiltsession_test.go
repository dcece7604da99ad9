package tiltsession

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTargetOptions(t *testing.T) {
	tt := DefaultTarget("echo")
	if got := strings.Join(tt.Args(2, 60), " "); got != "-- --client-rate 60 --client-concurrency 4 --server-replicas 2" {
		t.Errorf("default target's options: %s", got)
	}
	tt = Target{Namespace: "alice", Port: 10360, Offset: 100, Options: []string{"--allowed-context", "dev"},
		UpOnly: []string{"--local", "server"}, Kubeconfig: "/tmp/kc"}
	if got := strings.Join(tt.Args(1, 10), " "); got != "-- --client-rate 10 --client-concurrency 4 --server-replicas 1 --namespace alice --port-offset 100 --allowed-context dev" {
		t.Errorf("options: %s", got)
	}
	if got := tt.Local(20000); got != "127.0.0.1:20100" {
		t.Errorf("the forward of 20000 with offset 100: %s", got)
	}
	if !tt.OnHost("server") || tt.OnHost("client") {
		t.Errorf("--local server: OnHost(server) %v, OnHost(client) %v", tt.OnHost("server"), tt.OnHost("client"))
	}
	if env := tt.Env(); env[len(env)-1] != "KUBECONFIG=/tmp/kc" {
		t.Errorf("the target's environment ends with %q, want its KUBECONFIG", env[len(env)-1])
	}
	if env := DefaultTarget("echo").Env(); slices.ContainsFunc(env, func(e string) bool { return e == "KUBECONFIG=/tmp/kc" }) {
		t.Error("the default target sets a KUBECONFIG of its own")
	}
}

func TestResource(t *testing.T) {
	// What `tilt get uiresource NAME -o json` prints, cut to the fields read.
	const building = `{"status": {"currentBuild": {"startTime": "2026-12-07T10:00:01.000000Z"},
		"buildHistory": [{"startTime": "2026-12-07T10:00:00.000000Z", "finishTime": "2026-12-07T10:00:00.500000Z"},
		{"startTime": "2026-12-07T09:59:00.000000Z", "finishTime": "2026-12-07T09:59:02.000000Z", "error": "exit status 1"}]}}`
	var r Resource
	if err := json.Unmarshal([]byte(building), &r); err != nil {
		t.Fatal(err)
	}
	if r.Idle() {
		t.Error("a resource with a current build is idle")
	}
	since := time.Date(2026, 12, 7, 9, 59, 30, 0, time.UTC)
	if b, ok := r.buildAfter(since); !ok || b.Finish.Sub(b.Start) != 500*time.Millisecond {
		t.Errorf("the build after %v: %+v %v, want the one of 10:00", since, b, ok)
	}
	if b, ok := r.buildAfter(since.Add(-time.Hour)); !ok || b.Error != "" {
		t.Errorf("the newest build after an hour before: %+v %v, want the newest, without error", b, ok)
	}
	if _, ok := r.buildAfter(since.Add(time.Hour)); ok {
		t.Error("a build found after the last one")
	}
	if !(Resource{}).Idle() {
		t.Error("a resource with no build is not idle")
	}
}

func TestTail(t *testing.T) {
	if Tail("short") != "short" {
		t.Error("a short output is cut")
	}
	long := strings.Repeat("x", 5000) + "end"
	if got := Tail(long); len(got) != 4003 || !strings.HasPrefix(got, "...") || !strings.HasSuffix(got, "end") {
		t.Errorf("Tail of 5003 bytes: %d bytes, %.10q...", len(got), got)
	}
}

func TestForwardErrors(t *testing.T) {
	log := "server │ Reconnecting\n" +
		"server │ port-forward: Error forwarding port 20000 to pod server-1: lost connection\n" +
		"client │ port-forward 9001 is ready\n" +
		"client │ port-forward lost connection to pod\n"
	got := forwardErrors(log)
	if len(got) != 2 || !strings.Contains(got[0], "Error forwarding") || !strings.Contains(got[1], "lost connection") {
		t.Errorf("forwardErrors: %q, want the error line and the lost connection", got)
	}
}

func TestSummarize(t *testing.T) {
	rs := []EditResult{
		{User: 3 * time.Second, Total: 4 * time.Second, Compile: 2 * time.Second, Refused: 1, Failed: 1},
		{User: 1 * time.Second, Total: 2 * time.Second, Compile: 1 * time.Second},
		{User: 2 * time.Second, Total: 9 * time.Second, Compile: 3 * time.Second, Failed: 2},
	}
	s := Summarize(rs)
	if s.UserP50 != 2*time.Second || s.UserMax != 3*time.Second || s.P50 != 4*time.Second || s.Max != 9*time.Second ||
		s.Compile != 2*time.Second || s.Refused != 1 || s.Failed != 3 {
		t.Errorf("Summarize: %+v", s)
	}
	if m := Median([]time.Duration{4, 1, 3, 2}); m != 3 {
		t.Errorf("the median of an even count is the upper one: %v, want 3", m)
	}
}

func TestEditReply(t *testing.T) {
	src := []byte("func echo() {\n\treturn &foopb.EchoReply{Message: name}, nil\n}\n")
	got := string(EditReply(t, src, 7))
	if !strings.Contains(got, `Message: name + " (edit 7)"`) {
		t.Errorf("EditReply: %s", got)
	}
	// The server's own source has the line the edits change.
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	server, err := os.ReadFile(filepath.Join(root, EditedFile["server"]))
	if err != nil {
		t.Fatal(err)
	}
	if string(EditReply(t, server, 1)) == string(server) {
		t.Errorf("%s not changed by an edit", EditedFile["server"])
	}
}

func TestCopyAndCommit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	root := t.TempDir()
	for name, data := range map[string]string{"a.go": "package a\n", "dir/b.txt": "b\n", "ignored.log": "x\n", ".gitignore": "*.log\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := &Session{Dir: t.TempDir(), h: Harness{Root: root}}
	s.Git(t, root, nil, "init", "-q")
	s.Git(t, root, nil, "add", "a.go", ".gitignore")
	s.copyRepository(t)
	if _, err := os.Stat(filepath.Join(s.Dir, "dir", "b.txt")); err != nil {
		t.Errorf("a new file git does not ignore was not copied: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "ignored.log")); err == nil {
		t.Error("an ignored file was copied")
	}
	rev := s.CommitAndWrite(t, "a.go", []byte("package a // edited\n"))
	if head := strings.TrimSpace(s.Git(t, s.Dir, nil, "rev-parse", "HEAD")); head != rev {
		t.Errorf("HEAD %s, want the edit's commit %s", head, rev)
	}
	if data, _ := os.ReadFile(filepath.Join(s.Dir, "a.go")); string(data) != "package a // edited\n" {
		t.Errorf("a.go after the edit: %q", data)
	}
	if st := s.Git(t, s.Dir, nil, "status", "--porcelain"); st != "" {
		t.Errorf("the copy is not clean after an edit: %q", st)
	}
}
