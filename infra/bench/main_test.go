package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// quickEnv names the variable that turns TestQuick on: scripts/test sets
// it, in a step of its own, so that the bench's processes do not share the
// CPUs with the other packages' tests.
const quickEnv = "BENCH_QUICK"

// TestQuick runs scripts/bench --quick, every section at its smallest size,
// and checks that each section ran and printed its lines. The figures are
// too short to mean anything and are not checked.
func TestQuick(t *testing.T) {
	if os.Getenv(quickEnv) == "" {
		t.Skipf("about a minute of processes under load: %s=1 runs it (scripts/test does)", quickEnv)
	}
	cmd := exec.CommandContext(t.Context(), filepath.Join("..", "..", "scripts", "bench"), "--quick")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/bench --quick: %v\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	parts := titled(stdout.String())
	// What each section prints, whatever its figures: a line for each
	// server and round, a table, a comparison.
	want := map[string][]string{
		"cpu": {
			`(?m)^round 1 ours +\S+ µs CPU per call`, `(?m)^round 2 defaults `, `(?m)^round 2 bare `,
			`(?m)^ours/defaults \(per round\) +\S+ \[`, `(?m)^ours exported \d+ spans for \d+ calls`, `(?m)^defaults exported \d+ spans`,
		},
		"throughput": {`(?m)^round 2 ours +\d+ calls/s +p50 `, `(?m)^round 2 bare `, `(?m)^ours/bare calls/s per round: median `},
		"micro":      {`EchoCall`, `EchoHandler`, `EchoCallPart`, `GRPCPort`, `allocs/op`},
		"scrape":     {`(?m)^text +fresh +\d+ +\d+ +\d+$`, `(?m)^protobuf +after load `, `(?m)^series before and after the calls: \d+ and \d+ `},
		"memory":     {`(?m)^server \(ours\) +\S+ +\S+$`, `(?m)^bareserver `, `(?m)^client, 1 call/s / unlimited `, `(?m)^the unlimited client made \d+ calls/s`},
		"startup":    {`(?m)^server +\S+$`, `(?m)^exec to SERVING, median of \d+: ours \S+ ms, bare \S+ ms`, `(?m)^rebuild after a one-line edit .*: median \d+ `},
		"summary": {
			`(?m)^CPU per call ours/defaults, median \[min, max\] \(target <= 1.00\) +\S+ \[`,
			`(?m)^throughput ours/bare`, `(?m)^series of the server, fresh / after the load +\d+ / \d+`,
			`(?m)^scrape after load, text`, `(?m)^RSS MiB server idle / peak`, `(?m)^RSS MiB client`,
			`(?m)^exec to SERVING ms`, `(?m)^rebuild after a one-line edit ms +\d+`,
		},
	}
	for _, name := range append(sections, "summary") {
		body, ok := parts[name]
		if !ok {
			t.Errorf("no section %s in the output", name)
			continue
		}
		if len(want[name]) == 0 {
			t.Errorf("section %s: the test expects no line of it", name)
		}
		for _, re := range want[name] {
			if !regexp.MustCompile(re).MatchString(body) {
				t.Errorf("section %s: no line matches %s", name, re)
			}
		}
	}
	if t.Failed() {
		t.Logf("scripts/bench --quick:\n%s", stdout.String())
	}
}

// titled splits the bench's output at its titles ("== NAME: ...   (load
// average ...)", "== summary DATE"): the text under each, by the title's
// first word.
func titled(out string) map[string]string {
	parts := map[string]string{}
	name := ""
	for line := range strings.Lines(out) {
		if title, ok := strings.CutPrefix(line, "== "); ok {
			name, _, _ = strings.Cut(strings.Fields(title)[0], ":")
			continue
		}
		parts[name] += line
	}
	return parts
}
