package tiltsession

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/echo"
	"example.com/grpc-metrics/infra/proctest"
)

// The edit-and-reload loop under a real Tilt: edits are made in the
// session's copy of the repository, and each is timed from the moment the
// file is written until every pod of the program runs the new code and
// answers.

const (
	EditTimeout = 60 * time.Second // for one edit to reach every pod
	SettleTime  = time.Second      // between edits, and before counting failed calls
	// userPoll spaces the calls through a port-forward that wait for an
	// edit's new code once its process has started.
	userPoll = 10 * time.Millisecond
)

// EditedFile is the file each program's edits change.
var EditedFile = map[string]string{
	"server": "services/server/echo.go",
	"client": "services/client/caller.go",
}

// replyLine is the line of the echo handler that an edit of the server
// changes, so that a call shows which build answered it.
const replyLine = "return &foopb.EchoReply{Message: name}, nil"

// EditReply returns the server's echo.go whose echo replies with the name
// followed by " (edit n)".
func EditReply(t testing.TB, original []byte, n int) []byte {
	t.Helper()
	if !bytes.Contains(original, []byte(replyLine)) {
		t.Fatalf("%s has no line %q to edit", EditedFile["server"], replyLine)
	}
	return bytes.Replace(original, []byte(replyLine),
		fmt.Appendf(nil, "return &foopb.EchoReply{Message: name + %q}, nil", fmt.Sprintf(" (edit %d)", n)), 1)
}

// UserCall is what a person does after a save: echo through Tilt's
// forward of localhost:20000 (plus the offset), on a new connection, as
// grpcurl does.
func (s *Session) UserCall(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return echo.EchoWait(ctx, s.Target.Local(20000), name)
}

// RestoreServer makes the server's code the one the session started with
// again, after edits that changed its reply, and waits until it answers:
// the last step of a check that edits, so the environment is left with the
// code it had.
func (s *Session) RestoreServer(t testing.TB) {
	t.Helper()
	path := filepath.Join(s.Dir, EditedFile["server"])
	current, err := os.ReadFile(path)
	if err != nil || bytes.Equal(current, s.ServerSource) || t.Failed() {
		return
	}
	select {
	case <-s.Proc.Done():
		return
	default:
	}
	// The pods may have been replaced since the probes were made (options
	// changed with tilt args).
	if err := s.h.Cluster.WaitRollout(t.Context(), s.Target.Namespace, "server", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	s.Probes["server"] = echo.NewProbes(t, s.h.Cluster, s.Target.Namespace, "server")
	began := time.Now()
	rev := s.CommitAndWrite(t, EditedFile["server"], s.ServerSource)
	s.WaitForRevision(t, "server", rev, began)
}

// EditResult is one timed edit.
type EditResult struct {
	User    time.Duration // server edits: file written -> a call through localhost:20000 answered by the new build
	Refused int           // server edits: calls through localhost:20000 that failed while polling for the new build
	Total   time.Duration // file written -> every pod answers with the new build
	Detect  time.Duration // file written -> compile starts (Tilt's file watch)
	Compile time.Duration // scripts/build
	Handoff time.Duration // compile done -> live update starts (negative: it starts before the compile resource ends)
	Sync    time.Duration // live update: copy to every pod, restart signalled
	Restart time.Duration // live update done -> every pod's new process answers
	Failed  float64       // client calls failed during the edit
}

// Edit makes one Edit of program and times it.
func (s *Session) Edit(t testing.TB, program string) EditResult {
	t.Helper()
	path := EditedFile[program]
	original, err := os.ReadFile(filepath.Join(s.Dir, path))
	if err != nil {
		t.Fatal(err)
	}
	s.Edits++
	content := fmt.Appendf(original, "\n// live-update loop edit %d\n", s.Edits)
	var failed0 float64
	logBefore := len(s.Proc.Output())
	var r EditResult
	var want string
	if program == "server" {
		content = EditReply(t, s.ServerSource, s.Edits)
		want = fmt.Sprintf("user (edit %d)", s.Edits)
		_, failed0 = s.Calls.Read(t)
		// A call through the forward right before the save, as a person
		// checking the previous edit makes.
		if _, err := s.UserCall("user"); err != nil {
			t.Fatalf("a call through %s before edit %d: %v", s.Target.Local(20000), s.Edits, err)
		}
	}
	began := time.Now()
	rev := s.CommitAndWrite(t, path, content)
	if program == "server" {
		r.User, r.Refused = FirstAnswer(t, fmt.Sprintf("edit %d (revision %.8s) through %s", s.Edits, rev, s.Target.Local(20000)), began,
			func() bool {
				return slices.ContainsFunc(s.Probes["server"], func(p *echo.PodProbe) bool { return p.Started(rev) })
			},
			func() (string, error) { return s.UserCall("user") }, want)
	}
	r.Total = s.WaitForRevision(t, program, rev, began)
	time.Sleep(SettleTime)
	if program == "server" {
		_, failed1 := s.Calls.Read(t)
		r.Failed = failed1 - failed0
	} else {
		// The client itself restarted: count its failure log lines instead.
		r.Failed = float64(len(proctest.Events(s.Proc.Output()[logBefore:], "echo_failed")))
	}
	// Tilt sees the new binary, and starts the live update, while the compile
	// resource is still finishing: the hand-off may be negative.
	if compile, ok := s.BuildAfter(t, program+"-compile", began); ok {
		r.Detect, r.Compile = compile.Start.Sub(began), compile.Finish.Sub(compile.Start)
		if lu, ok := s.BuildAfter(t, program, compile.Start); ok {
			r.Handoff, r.Sync, r.Restart = lu.Start.Sub(compile.Finish), lu.Finish.Sub(lu.Start), began.Add(r.Total).Sub(lu.Finish)
		}
	}
	return r
}

// EditN makes n timed edits of program, one after the other.
func (s *Session) EditN(t testing.TB, program string, n int) []EditResult {
	t.Helper()
	var rs []EditResult
	for range n {
		rs = append(rs, s.Edit(t, program))
	}
	return rs
}

// FirstAnswer times an edit as a person sees it: once started reports that a
// process of the edit serves, it calls every userPoll until call returns
// want. It returns the time from began and how many calls failed meanwhile,
// and fails the test once editTimeout has passed since began.
func FirstAnswer(t testing.TB, what string, began time.Time, started func() bool, call func() (string, error), want string) (time.Duration, int) {
	t.Helper()
	// Calls begin once the new process logs that it serves: each costs the
	// API server, the kubelet and the container runtime CPU that the compile
	// of the edit also needs, so calls made all along would slow what they
	// time.
	for !started() {
		if time.Since(began) > EditTimeout {
			t.Fatalf("%s: no new process serves within %v", what, EditTimeout)
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
		if time.Since(began) > EditTimeout {
			t.Fatalf("%s: no answer %q within %v (last: %q, %v)", what, want, EditTimeout, got, err)
		}
		time.Sleep(userPoll)
	}
}

// WaitForRevision waits until every pod of program runs rev and its new
// process has answered; it returns the time from began. The log tells when
// the process serves; the metrics, polled from then on, when it answered.
func (s *Session) WaitForRevision(t testing.TB, program, rev string, began time.Time) time.Duration {
	t.Helper()
	probes := s.Probes[program]
	done := map[*echo.PodProbe]time.Time{}
	for len(done) < len(probes) {
		for _, p := range probes {
			if _, ok := done[p]; ok {
				continue
			}
			if !p.Started(rev) {
				continue
			}
			if got, answering := p.State(program); got == rev && answering {
				done[p] = time.Now()
			}
		}
		if time.Since(began) > EditTimeout {
			t.Fatalf("%s: revision %.8s not answering on every pod within %v (answering: %d of %d)",
				program, rev, EditTimeout, len(done), len(probes))
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

// Summary is the p50 and max of the edits' times and their failed calls.
type Summary struct {
	UserP50, UserMax       time.Duration // server edits: as a person calling through localhost:20000 sees it
	Refused                int
	P50, Max               time.Duration
	Compile, Sync, Restart time.Duration // medians
	Failed                 float64
}

func Summarize(rs []EditResult) Summary {
	med := func(f func(EditResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		return Median(ds)
	}
	var s Summary
	for _, r := range rs {
		s.Max = max(s.Max, r.Total)
		s.UserMax = max(s.UserMax, r.User)
		s.Refused += r.Refused
		s.Failed += r.Failed
	}
	s.UserP50 = med(func(r EditResult) time.Duration { return r.User })
	s.P50 = med(func(r EditResult) time.Duration { return r.Total })
	s.Compile = med(func(r EditResult) time.Duration { return r.Compile })
	s.Sync = med(func(r EditResult) time.Duration { return r.Sync })
	s.Restart = med(func(r EditResult) time.Duration { return r.Restart })
	return s
}

// Median is the middle of ds once sorted, the upper one of an even count.
func Median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[len(s)/2]
}
