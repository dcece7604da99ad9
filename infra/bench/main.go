// Command bench measures what the server's instrumentation costs against
// baselines (infra/bench/baseline: a bare grpc-go server, and one with the
// ecosystem's metrics and tracing at their defaults), all built the same way
// and run on loopback, and the inner loop of a developer. It prints each
// section's figures and a summary; docs/BENCHMARKS.md explains them.
//
//	cpu         headline: the server process's own CPU time per call, at a
//	            fixed call rate (ghz), ours, the defaults and bare in turn,
//	            each round on warm processes; the tracing ones export to an
//	            OTLP receiver in this process. With -compare REV, the
//	            server at REV too, in the same turns; with -profile DIR, then
//	            a CPU profile of each under the same load (pprof listeners)
//	throughput  ghz at fixed concurrency, ours and bare alternating:
//	            noise-bound on a shared 2-core machine, secondary
//	micro       go test -bench of one call in process, compared by benchstat;
//	            then each part of the instrumentation alone against bare
//	scrape      /metrics in each format, fresh and after the load; the series
//	            count must not grow with the calls
//	memory      peak resident memory of the servers and of the client
//	startup     exec to SERVING; binary sizes; rebuild after a one-line edit
//	            (with -compare REV, also at that git revision, alternating)
//
// Usage: bench [-quick] [-rounds N] [-calls N] [-rate R] [-edits N] [-only SECTION] [-compare REV] [-profile DIR] REPOSITORY
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// settings of one run.
type settings struct {
	root        string
	quick       bool
	rounds      int           // cpu and throughput rounds, each runs every target once
	calls       int           // calls of one cpu measurement
	rate        int           // calls per second of the cpu measurement
	duration    time.Duration // of one throughput run
	concurrency int           // ghz workers of the throughput runs
	microCount  int           // go test -count of the micro benchmarks
	microTime   string        // go test -benchtime of the micro benchmarks
	starts      int           // start-to-SERVING measurements of each program
	edits       int           // rebuilds after a one-line edit
	only        string        // run only this section (one of sections)
	compare     string        // a git revision whose server is measured beside the working tree's (cpu, startup's rebuild)
	profile     string        // cpu: a directory for each server's CPU profile under the same load
}

// sections are the parts of a run, in order; -only picks one.
var sections = []string{"cpu", "throughput", "micro", "scrape", "memory", "startup"}

// runs reports whether section is to run.
func (s settings) runs(section string) bool { return s.only == "" || s.only == section }

func main() {
	var s settings
	flag.BoolVar(&s.quick, "quick", false, "short runs: checks the tool, figures too short to publish")
	flag.IntVar(&s.rounds, "rounds", 6, "rounds of the cpu and throughput measurements")
	flag.IntVar(&s.calls, "calls", 20000, "calls of one cpu measurement")
	flag.IntVar(&s.rate, "rate", 2000, "calls per second of the cpu measurement")
	flag.StringVar(&s.only, "only", "", "run only one section: "+strings.Join(sections, ", "))
	flag.IntVar(&s.edits, "edits", 3, "startup: rebuilds after a one-line edit (of each tree with -compare)")
	flag.StringVar(&s.compare, "compare", "", "cpu: also measure the server at this git revision; startup: also time its rebuild, alternating with the working tree's")
	flag.StringVar(&s.profile, "profile", "", "cpu: after the rounds, write each server's CPU profile under the same load to this directory, relative to the repository (go tool pprof)")
	flag.Parse()
	if s.only != "" && !slices.Contains(sections, s.only) {
		fmt.Fprintf(os.Stderr, "bench: -only %s: no such section (%s)\n", s.only, strings.Join(sections, ", "))
		os.Exit(2)
	}
	s.duration, s.concurrency, s.microCount, s.microTime, s.starts = 8*time.Second, 16, 5, "1s", 10
	if s.quick {
		s.rounds, s.calls, s.duration, s.microCount, s.microTime, s.starts, s.edits = 2, 2000, 2*time.Second, 1, "200x", 3, 1
	}
	if flag.NArg() != 1 || s.rounds < 1 || s.calls < 100 || s.rate < 1 || s.edits < 1 {
		fmt.Fprintln(os.Stderr, "usage: bench [-quick] [-rounds N>=1] [-calls N>=100] [-rate R>=1] [-edits N>=1] [-only SECTION] [-compare REV] [-profile DIR] REPOSITORY")
		os.Exit(2)
	}
	s.root = flag.Arg(0)
	if s.profile != "" && !filepath.IsAbs(s.profile) {
		s.profile = filepath.Join(s.root, s.profile) // scripts/bench runs in the repository
	}
	if err := run(context.Background(), s); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// report collects the summary lines.
type report struct{ lines [][2]string }

func (r *report) add(what, value string) { r.lines = append(r.lines, [2]string{what, value}) }

// section prints the title of a part of the run: a section's begins with
// its name and a colon.
func section(title string) {
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\n== %s   (load average %s)\n", title, strings.Join(strings.Fields(string(load))[:3], " "))
}

func run(ctx context.Context, s settings) error {
	tmp, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var rep report

	section("machine")
	fmt.Println(machine())

	section("build")
	bin, err := build(ctx, s.root, tmp)
	if err != nil {
		return err
	}
	if s.compare != "" && s.runs("cpu") {
		if bin.serverAt, err = buildAt(ctx, s.root, s.compare, tmp); err != nil {
			return err
		}
	}

	if s.runs("cpu") || s.runs("throughput") || s.runs("scrape") || s.runs("memory") {
		if err := withServers(ctx, s, bin, &rep); err != nil {
			return err
		}
	}
	if s.runs("micro") {
		section(fmt.Sprintf("micro: one call in process, go test -bench -benchtime %s -count %d, benchstat", s.microTime, s.microCount))
		if err := micro(ctx, s, bin, tmp); err != nil {
			return err
		}
	}
	if s.runs("startup") {
		section("startup: binaries, exec to SERVING, rebuild after a one-line edit")
		if err := innerLoop(ctx, s, bin, tmp, &rep); err != nil {
			return err
		}
	}
	return summary(s, rep)
}

// summary prints the summary lines.
func summary(s settings, rep report) error {
	section("summary " + time.Now().UTC().Format("2006-01-02 15:04 UTC") + ", " + revision(s.root))
	w := table()
	for _, l := range rep.lines {
		fmt.Fprintf(w, "%s\t%s\n", l[0], l[1])
	}
	w.Flush()
	if s.quick {
		fmt.Println("(-quick: too short to publish)")
	}
	return nil
}

// revision names the commit of the tree measured, for the figures' table:
// "commit 1a2b3c4d", with "+ changes not committed" when the work tree
// differs from it.
func revision(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--abbrev=8", "--dirty=+").Output()
	if err != nil {
		return "no git commit"
	}
	rev, dirty := strings.CutSuffix(strings.TrimSpace(string(out)), "+")
	if dirty {
		return "commit " + rev + " + changes not committed"
	}
	return "commit " + rev
}

// machine describes the CPU, memory, kernel and Go of this machine.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	kernel := ""
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return fmt.Sprintf("%s, %d CPUs, %.0f GiB, %s, %s", cpu, runtime.NumCPU(), procKiB("/proc/meminfo", "MemTotal")/(1<<20), kernel, runtime.Version())
}

// procKiB returns a field of a /proc file of "Field: N kB" lines, in KiB.
func procKiB(path, field string) float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib
		}
	}
	return 0
}

// table writes aligned columns to stdout; Flush prints them.
func table() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread formats xs as "median [min, max]", each number with verb.
func spread(verb string, xs []float64) string {
	if len(xs) == 0 {
		return "(none)"
	}
	return fmt.Sprintf(verb+" ["+verb+", "+verb+"]", median(xs), slices.Min(xs), slices.Max(xs))
}
