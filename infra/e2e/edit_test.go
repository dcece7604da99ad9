//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// The edit-and-reload loop under a real Tilt: edits are made in the
// session's copy of the repository, and each is timed from the moment the
// file is written until every pod of the program runs the new code and
// answers.

const (
	editTimeout = 60 * time.Second // for one edit to reach every pod
	settle      = time.Second      // between edits, and before counting failed calls
	// userPoll spaces the calls through a port-forward that wait for an
	// edit's new code once its process has started.
	userPoll = 10 * time.Millisecond
)

// editedFile is the file each program's edits change.
var editedFile = map[string]string{
	"server": "services/server/echo.go",
	"client": "services/client/caller.go",
}

// replyLine is the line of the echo handler that an edit of the server
// changes, so that a call shows which build answered it.
const replyLine = "return &foopb.EchoReply{Message: name}, nil"

// editReply returns the server's echo.go whose echo replies with the name
// followed by " (edit n)".
func editReply(t testing.TB, original []byte, n int) []byte {
	t.Helper()
	if !bytes.Contains(original, []byte(replyLine)) {
		t.Fatalf("%s has no line %q to edit", editedFile["server"], replyLine)
	}
	return bytes.Replace(original, []byte(replyLine),
		fmt.Appendf(nil, "return &foopb.EchoReply{Message: name + %q}, nil", fmt.Sprintf(" (edit %d)", n)), 1)
}

// userCall is what a person does after a save: echo through Tilt's
// forward of localhost:20000 (plus the offset), on a new connection, as
// grpcurl does.
func (s *tiltSession) userCall(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return echoWait(ctx, s.target.local(20000), name)
}

// restoreServer makes the server's code the one the session started with
// again, after edits that changed its reply, and waits until it answers:
// the last step of a check that edits, so the environment is left with the
// code it had.
func (s *tiltSession) restoreServer(t testing.TB) {
	t.Helper()
	path := filepath.Join(s.dir, editedFile["server"])
	current, err := os.ReadFile(path)
	if err != nil || bytes.Equal(current, s.serverSource) || t.Failed() {
		return
	}
	select {
	case <-s.proc.Done():
		return
	default:
	}
	// The pods may have been replaced since the probes were made (options
	// changed with tilt args).
	if err := suite.c.waitRolloutIn(t.Context(), s.target.ns, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	s.probes["server"] = newProbes(t, s.target.ns, "server")
	began := time.Now()
	rev := s.commitAndWrite(t, editedFile["server"], s.serverSource)
	s.waitForRevision(t, "server", rev, began)
}

// podProbe follows one pod: its log, for the start of each process and the
// revision it runs (cheap, and at once), and its metrics through a
// port-forward, for whether that process answers. It opens no connection to
// the program's gRPC port: a connection through a port-forward lingers in
// the pod for about a second after it is closed, and the server's graceful
// stop would wait for it.
type podProbe struct {
	pod     string
	metrics string // the URL of its /metrics

	mu      sync.Mutex
	serving map[string]bool // revisions whose process logged that it serves
}

// started reports whether a process of revision rev has logged that it serves.
func (p *podProbe) started(rev string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving[rev]
}

func newProbes(t testing.TB, ns, app string) []*podProbe {
	t.Helper()
	var out []*podProbe
	for _, p := range mustPods(t, ns, app, false, 0) {
		pp := &podProbe{pod: p.Name, metrics: metricsURL(t, ns, p.Name), serving: map[string]bool{}}
		pp.follow(t, ns)
		out = append(out, pp)
	}
	return out
}

// follow streams the pod's log from now on and reports each process that
// logs the event "serving" (the server) or "calling" (the client), with the
// revision of its "starting" line.
func (p *podProbe) follow(t testing.TB, ns string) {
	t.Helper()
	revision := ""
	followLog(t, ns, p.pod, func(text []byte) {
		line, ok := proctest.ParseLogLine(string(text))
		if !ok {
			return
		}
		switch line["event"] {
		case "starting":
			revision, _ = line["revision"].(string)
		case "serving", "calling":
			p.mu.Lock()
			p.serving[revision] = true
			p.mu.Unlock()
		}
	})
}

// state returns the revision the pod's program reports and whether that
// process answers: the server has answered a call of the client since it
// started, the client has made a successful call.
func (p *podProbe) state(program string) (revision string, answering bool) {
	mfs, err := proctest.Scrape(p.metrics)
	if err != nil {
		return "", false
	}
	revision = revisionOf(mfs, program)
	if program == "server" {
		return revision, answered(mfs) >= 1
	}
	return revision, proctest.Value(mfs, "echo_client_calls_total", map[string]string{"result": "ok"}) >= 1
}

// editResult is one timed edit.
type editResult struct {
	user    time.Duration // server edits: file written -> a call through localhost:20000 answered by the new build
	refused int           // server edits: calls through localhost:20000 that failed while polling for the new build
	total   time.Duration // file written -> every pod answers with the new build
	detect  time.Duration // file written -> compile starts (Tilt's file watch)
	compile time.Duration // scripts/build
	handoff time.Duration // compile done -> live update starts (negative: it starts before the compile resource ends)
	sync    time.Duration // live update: copy to every pod, restart signalled
	restart time.Duration // live update done -> every pod's new process answers
	failed  float64       // client calls failed during the edit
}

// edit makes one edit of program and times it.
func (s *tiltSession) edit(t testing.TB, program string) editResult {
	t.Helper()
	path := editedFile[program]
	original, err := os.ReadFile(filepath.Join(s.dir, path))
	if err != nil {
		t.Fatal(err)
	}
	s.edits++
	content := fmt.Appendf(original, "\n// live-update loop edit %d\n", s.edits)
	var failed0 float64
	logBefore := len(s.proc.Output())
	var r editResult
	var want string
	if program == "server" {
		content = editReply(t, s.serverSource, s.edits)
		want = fmt.Sprintf("user (edit %d)", s.edits)
		_, failed0 = s.calls.read(t)
		// A call through the forward right before the save, as a person
		// checking the previous edit makes.
		if _, err := s.userCall("user"); err != nil {
			t.Fatalf("a call through %s before edit %d: %v", s.target.local(20000), s.edits, err)
		}
	}
	began := time.Now()
	rev := s.commitAndWrite(t, path, content)
	if program == "server" {
		r.user, r.refused = firstAnswer(t, fmt.Sprintf("edit %d (revision %.8s) through %s", s.edits, rev, s.target.local(20000)), began,
			func() bool {
				return slices.ContainsFunc(s.probes["server"], func(p *podProbe) bool { return p.started(rev) })
			},
			func() (string, error) { return s.userCall("user") }, want)
	}
	r.total = s.waitForRevision(t, program, rev, began)
	time.Sleep(settle)
	if program == "server" {
		_, failed1 := s.calls.read(t)
		r.failed = failed1 - failed0
	} else {
		// The client itself restarted: count its failure log lines instead.
		r.failed = float64(len(proctest.Events(s.proc.Output()[logBefore:], "echo_failed")))
	}
	// Tilt sees the new binary, and starts the live update, while the compile
	// resource is still finishing: the hand-off may be negative.
	if compile, ok := s.buildAfter(t, program+"-compile", began); ok {
		r.detect, r.compile = compile.Start.Sub(began), compile.Finish.Sub(compile.Start)
		if lu, ok := s.buildAfter(t, program, compile.Start); ok {
			r.handoff, r.sync, r.restart = lu.Start.Sub(compile.Finish), lu.Finish.Sub(lu.Start), began.Add(r.total).Sub(lu.Finish)
		}
	}
	return r
}

// editN makes n timed edits of program, one after the other.
func (s *tiltSession) editN(t testing.TB, program string, n int) []editResult {
	t.Helper()
	var rs []editResult
	for range n {
		rs = append(rs, s.edit(t, program))
	}
	return rs
}

// firstAnswer times an edit as a person sees it: once started reports that a
// process of the edit serves, it calls every userPoll until call returns
// want. It returns the time from began and how many calls failed meanwhile,
// and fails the test once editTimeout has passed since began.
func firstAnswer(t testing.TB, what string, began time.Time, started func() bool, call func() (string, error), want string) (time.Duration, int) {
	t.Helper()
	// Calls begin once the new process logs that it serves: each costs the
	// API server, the kubelet and the container runtime CPU that the compile
	// of the edit also needs, so calls made all along would slow what they
	// time.
	for !started() {
		if time.Since(began) > editTimeout {
			t.Fatalf("%s: no new process serves within %v", what, editTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	failed := 0
	for {
		got, err := call()
		if got == want {
			return time.Since(began), failed
		}
		if err != nil {
			failed++
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("%s: no answer %q within %v (last: %q, %v)", what, want, editTimeout, got, err)
		}
		time.Sleep(userPoll)
	}
}

// waitForRevision waits until every pod of program runs rev and its new
// process has answered; it returns the time from began. The log tells when
// the process serves; the metrics, polled from then on, when it answered.
func (s *tiltSession) waitForRevision(t testing.TB, program, rev string, began time.Time) time.Duration {
	t.Helper()
	probes := s.probes[program]
	done := map[*podProbe]time.Time{}
	for len(done) < len(probes) {
		for _, p := range probes {
			if _, ok := done[p]; ok {
				continue
			}
			if !p.started(rev) {
				continue
			}
			if got, answering := p.state(program); got == rev && answering {
				done[p] = time.Now()
			}
		}
		if time.Since(began) > editTimeout {
			t.Fatalf("%s: revision %.8s not answering on every pod within %v (answering: %d of %d)",
				program, rev, editTimeout, len(done), len(probes))
		}
		time.Sleep(25 * time.Millisecond)
	}
	var last time.Time
	for _, at := range done {
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(began)
}

// summary is the p50 and max of the edits' times and their failed calls.
type summary struct {
	userP50, userMax       time.Duration // server edits: as a person calling through localhost:20000 sees it
	refused                int
	p50, max               time.Duration
	compile, sync, restart time.Duration // medians
	failed                 float64
}

func summarize(rs []editResult) summary {
	med := func(f func(editResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		return median(ds)
	}
	var s summary
	for _, r := range rs {
		s.max = max(s.max, r.total)
		s.userMax = max(s.userMax, r.user)
		s.refused += r.refused
		s.failed += r.failed
	}
	s.userP50 = med(func(r editResult) time.Duration { return r.user })
	s.p50 = med(func(r editResult) time.Duration { return r.total })
	s.compile = med(func(r editResult) time.Duration { return r.compile })
	s.sync = med(func(r editResult) time.Duration { return r.sync })
	s.restart = med(func(r editResult) time.Duration { return r.restart })
	return s
}

// median is the middle of ds once sorted, the upper one of an even count.
func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2]
}
