// Command bench measures what the server's instrumentation costs against a
// bare grpc-go server (infra/bench/bareserver), both built the same
// way and run on loopback, and the inner loop of a developer. It prints each
// section's figures and a summary; docs/BENCHMARKS.md explains them.
//
//	cpu         headline: the server process's own CPU time per call, at a
//	            fixed call rate (ghz), ours and bare alternating, each round
//	            on warm processes
//	throughput  ghz at fixed concurrency, ours and bare alternating:
//	            noise-bound on a shared 2-core machine, secondary
//	micro       go test -bench of one call in process, compared by benchstat;
//	            then each part of the instrumentation alone against bare
//	scrape      /metrics in each format, fresh and after the load; the series
//	            count must not grow with the calls
//	memory      peak resident memory of the servers and of the client
//	startup     exec to SERVING; binary sizes; rebuild after a one-line edit
//
// Usage: bench [-quick] [-rounds N] [-calls N] [-rate R] [-only SECTION] REPOSITORY
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/grpc-metrics/infra/proctest"
)

// settings of one run.
type settings struct {
	root        string
	quick       bool
	rounds      int           // cpu and throughput rounds, each runs ours and bare once
	calls       int           // calls of one cpu measurement
	rate        int           // calls per second of the cpu measurement
	duration    time.Duration // of one throughput run
	concurrency int           // ghz workers of the throughput runs
	microCount  int           // go test -count of the micro benchmarks
	starts      int           // start-to-SERVING measurements of each program
	edits       int           // rebuilds after a one-line edit
	only        string        // run only this section (one of sections)
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
	flag.Parse()
	if s.only != "" && !slices.Contains(sections, s.only) {
		fmt.Fprintf(os.Stderr, "bench: -only %s: no such section (%s)\n", s.only, strings.Join(sections, ", "))
		os.Exit(2)
	}
	s.duration, s.concurrency, s.microCount, s.starts, s.edits = 8*time.Second, 16, 5, 10, 3
	if s.quick {
		s.rounds, s.calls, s.duration, s.microCount, s.starts, s.edits = 2, 2000, 2*time.Second, 1, 3, 1
	}
	if flag.NArg() != 1 || s.rounds < 1 || s.calls < 100 || s.rate < 1 {
		fmt.Fprintln(os.Stderr, "usage: bench [-quick] [-rounds N>=1] [-calls N>=100] [-rate R>=1] [-only SECTION] REPOSITORY")
		os.Exit(2)
	}
	s.root = flag.Arg(0)
	if err := run(context.Background(), s); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// report collects the summary lines.
type report struct{ lines [][2]string }

func (r *report) add(what, value string) { r.lines = append(r.lines, [2]string{what, value}) }

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

	if s.runs("cpu") || s.runs("throughput") || s.runs("scrape") || s.runs("memory") {
		if err := withServers(ctx, s, bin, &rep); err != nil {
			return err
		}
	}
	if s.runs("micro") {
		section(fmt.Sprintf("micro: one call in process, go test -bench -count %d, benchstat", s.microCount))
		if err := micro(ctx, s, bin, tmp); err != nil {
			return err
		}
	}
	if s.runs("startup") {
		section("inner loop: binaries, start to SERVING, rebuild after a one-line edit")
		if err := innerLoop(ctx, s, bin, tmp, &rep); err != nil {
			return err
		}
	}
	return summary(s, rep)
}

// withServers runs the sections that measure both servers running: the CPU
// per call, the throughput and, after that load, the scrape and memory.
func withServers(ctx context.Context, s settings, bin binaries, rep *report) error {
	ours, err := startProgram(ctx, bin.server, "grpc", []string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0"})
	if err != nil {
		return err
	}
	defer ours.stop()
	bare, err := startProgram(ctx, bin.bare, "grpc", nil, "-addr", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer bare.stop()
	metricsURL := "http://" + ours.addrs["metrics"] + "/metrics"
	fresh, err := scrapeAll(metricsURL)
	if err != nil {
		return err
	}
	idleOurs, idleBare := rss(ours.Pid(), "VmRSS"), rss(bare.Pid(), "VmRSS")

	if s.runs("cpu") {
		section(fmt.Sprintf("cpu: server CPU per call at %d calls/s, %d calls a run, %d rounds, ours and bare alternating", s.rate, s.calls, s.rounds))
		if err := cpuPerCall(ctx, s, bin, ours, bare, rep); err != nil {
			return err
		}
	}
	if s.runs("throughput") {
		section(fmt.Sprintf("throughput: ghz -c %d for %v, %d rounds (noise-bound on a shared 2-core machine: secondary)", s.concurrency, s.duration, s.rounds))
		if err := throughput(ctx, s, bin, ours, bare, rep); err != nil {
			return err
		}
	} else if s.runs("scrape") || s.runs("memory") {
		// The load the scrape and the peak memory are measured after.
		section(fmt.Sprintf("load: ghz -c %d for %v on each server", s.concurrency, s.duration))
		for _, p := range []*program{ours, bare} {
			r, err := ghz(ctx, bin, s.root, p.addrs["grpc"], "-c", strconv.Itoa(s.concurrency), "-z", s.duration.String(), "--duration-stop", "ignore")
			if err != nil {
				return err
			}
			fmt.Printf("%8.0f calls/s, %d failed\n", r.RPS, r.failed())
		}
	}
	if s.runs("scrape") {
		if err := scrapeSection(metricsURL, fresh, rep); err != nil {
			return err
		}
	}
	if s.runs("memory") {
		return memorySection(ctx, s, bin, ours, bare, idleOurs, idleBare, rep)
	}
	return nil
}

// scrapeSection scrapes the server after the load and compares with fresh:
// cost, size, and whether the series grew with the calls.
func scrapeSection(metricsURL string, fresh map[string]scrapeResult, rep *report) error {
	section("scrape: /metrics of the server, fresh and after the load")
	after, err := scrapeAll(metricsURL)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "format\twhen\tmedian µs\tbytes\tseries")
	for _, f := range formats {
		fmt.Fprintf(w, "%s\tfresh\t%.0f\t%d\t%d\n", f.name, fresh[f.name].micros, fresh[f.name].bytes, fresh[f.name].series)
		fmt.Fprintf(w, "%s\tafter load\t%.0f\t%d\t%d\n", f.name, after[f.name].micros, after[f.name].bytes, after[f.name].series)
	}
	w.Flush()
	verdict := "constant"
	if fresh["text"].series != after["text"].series {
		verdict = "GREW"
	}
	fmt.Printf("series before and after the calls: %d and %d (%s)\n", fresh["text"].series, after["text"].series, verdict)
	rep.add("series of the server, fresh / after the load", fmt.Sprintf("%d / %d (%s)", fresh["text"].series, after["text"].series, verdict))
	rep.add("scrape after load, text µs / bytes", fmt.Sprintf("%.0f / %d", after["text"].micros, after["text"].bytes))
	rep.add("scrape after load, protobuf µs / bytes", fmt.Sprintf("%.0f / %d", after["protobuf"].micros, after["protobuf"].bytes))
	return nil
}

// memorySection reports the resident memory of both servers, idle and at
// their peak, and of the client.
func memorySection(ctx context.Context, s settings, bin binaries, ours, bare *program, idleOurs, idleBare float64, rep *report) error {
	section("memory: resident set")
	peakOurs, peakBare := rss(ours.Pid(), "VmHWM"), rss(bare.Pid(), "VmHWM")
	clientIdle, clientPeak, clientRate, err := clientMemory(ctx, bin, ours.addrs["grpc"], s)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "process\tidle MiB\tpeak MiB")
	fmt.Fprintf(w, "server (ours)\t%.1f\t%.1f\n", idleOurs, peakOurs)
	fmt.Fprintf(w, "bareserver\t%.1f\t%.1f\n", idleBare, peakBare)
	fmt.Fprintf(w, "client, 1 call/s / unlimited\t%.1f\t%.1f\n", clientIdle, clientPeak)
	w.Flush()
	fmt.Printf("the unlimited client made %.0f calls/s\n", clientRate)
	rep.add("RSS MiB server idle / peak (bare)", fmt.Sprintf("%.1f / %.1f (%.1f / %.1f)", idleOurs, peakOurs, idleBare, peakBare))
	rep.add("RSS MiB client idle / loaded (calls/s)", fmt.Sprintf("%.1f / %.1f (%.0f)", clientIdle, clientPeak, clientRate))
	return nil
}

// summary prints the summary lines.
func summary(s settings, rep report) error {
	section("summary " + time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, l := range rep.lines {
		fmt.Fprintf(w, "%s\t%s\n", l[0], l[1])
	}
	w.Flush()
	if s.quick {
		fmt.Println("(-quick: too short to publish)")
	}
	return nil
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
	return fmt.Sprintf("%s, %d CPUs, %.0f GiB, %s, %s", cpu, runtime.NumCPU(), memTotalGiB(), kernel, runtime.Version())
}

func memTotalGiB() float64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib / (1 << 20)
		}
	}
	return 0
}

// binaries built for the run.
type binaries struct {
	server, client, bare, serverTest, ghz string
}

func build(ctx context.Context, root, dir string) (binaries, error) {
	b := binaries{
		server: filepath.Join(dir, "server"), client: filepath.Join(dir, "client"),
		bare: filepath.Join(dir, "bareserver"), serverTest: filepath.Join(dir, "server.test"),
	}
	goos, goarch := "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH
	steps := []struct {
		dir  string
		env  []string
		argv []string
	}{
		{root, []string{goos, goarch}, []string{"scripts/build", "server", b.server}},
		{root, []string{goos, goarch}, []string{"scripts/build", "client", b.client}},
		// The baseline is built like the server: static, trimmed, stripped.
		{filepath.Join(root, "infra"), []string{"CGO_ENABLED=0"}, []string{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", b.bare, "./bench/bareserver"}},
		{root, nil, []string{"go", "test", "-c", "-o", b.serverTest, "./services/server"}},
	}
	for _, st := range steps {
		cmd := exec.CommandContext(ctx, st.argv[0], st.argv[1:]...)
		cmd.Dir, cmd.Env = st.dir, append(os.Environ(), st.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("%s: %w\n%s", strings.Join(st.argv, " "), err, out)
		}
	}
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", "ghz")
	cmd.Dir = filepath.Join(root, "infra")
	out, err := cmd.Output()
	if err != nil {
		return b, fmt.Errorf("go tool -n ghz: %w", err)
	}
	b.ghz = strings.TrimSpace(string(out))
	fmt.Println("built server, client, bareserver and server.test; ghz pinned in infra/go.mod")
	return b, nil
}

// program is a running server or client whose addresses came from its log.
type program struct {
	*proctest.Process
	addrs map[string]string
}

func (p *program) stop() { p.Stop(15 * time.Second) }

// startProgram runs path and waits for its "listening" log line, which
// must name the listener key.
func startProgram(_ context.Context, path, key string, env []string, args ...string) (*program, error) {
	proc, err := proctest.Run("", path, env, args...)
	if err != nil {
		return nil, err
	}
	p := &program{Process: proc, addrs: map[string]string{}}
	addr, err := proc.WaitAddr(key, 10*time.Second)
	if err != nil {
		p.stop()
		return nil, err
	}
	p.addrs[key] = addr
	// The same line names the metrics listener, if the program has one.
	if addr, err := proc.WaitAddr("metrics", 0); err == nil {
		p.addrs["metrics"] = addr
	}
	return p, nil
}

// cpuNanos is the CPU time (user and system) of every thread of pid, in ns,
// from the scheduler's statistics.
func cpuNanos(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("schedstat: %w", err)
		}
		total += ns
	}
	return total, nil
}

// ghz runs ghz against addr with args and returns its JSON report.
func ghz(ctx context.Context, b binaries, root, addr string, args ...string) (ghzReport, error) {
	argv := append([]string{"--insecure", "--proto", filepath.Join(root, "proto", "foo.proto"), "--call", "foo.Foo/echo",
		"-d", `{"name":"world"}`, "--format", "json"}, args...)
	cmd := exec.CommandContext(ctx, b.ghz, append(argv, addr)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ghzReport{}, fmt.Errorf("ghz: %w: %s", err, stderr.String())
	}
	var r ghzReport
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("ghz report: %w", err)
	}
	return r, nil
}

// ghzReport is the part of ghz's JSON report the bench reads.
type ghzReport struct {
	Count         int                `json:"count"`
	RPS           float64            `json:"rps"`
	StatusCodeDst map[string]int     `json:"statusCodeDistribution"`
	Latency       []ghzLatencyDetail `json:"latencyDistribution"`
}

type ghzLatencyDetail struct {
	Percentage int   `json:"percentage"`
	Latency    int64 `json:"latency"` // ns
}

func (r ghzReport) failed() int {
	n := 0
	for code, c := range r.StatusCodeDst {
		if code != "OK" {
			n += c
		}
	}
	return n
}

func (r ghzReport) percentileMs(p int) float64 {
	for _, l := range r.Latency {
		if l.Percentage == p {
			return float64(l.Latency) / 1e6
		}
	}
	return 0
}

// target is one server measured.
type target struct {
	name string
	prog *program
}

// alternate yields the targets of each round, the order swapped every round
// so that neither always runs on a machine warmed by the other.
func alternate(rounds int, a, b target, f func(round int, t target) error) error {
	for i := range rounds {
		order := []target{a, b}
		if i%2 == 1 {
			order = []target{b, a}
		}
		for _, t := range order {
			if err := f(i, t); err != nil {
				return err
			}
		}
	}
	return nil
}

func cpuPerCall(ctx context.Context, s settings, b binaries, ours, bare *program, rep *report) error {
	targets := []target{{"ours", ours}, {"bare", bare}}
	// Warm both: connections, goroutines, the first exemplars.
	for _, t := range targets {
		if _, err := ghz(ctx, b, s.root, t.prog.addrs["grpc"], "-n", "2000", "-c", "8", "--rps", strconv.Itoa(s.rate)); err != nil {
			return err
		}
	}
	perCall := map[string][]float64{}
	err := alternate(s.rounds, targets[0], targets[1], func(round int, t target) error {
		before, err := cpuNanos(t.prog.Pid())
		if err != nil {
			return err
		}
		r, err := ghz(ctx, b, s.root, t.prog.addrs["grpc"], "-n", strconv.Itoa(s.calls), "-c", "8", "--rps", strconv.Itoa(s.rate))
		if err != nil {
			return err
		}
		after, err := cpuNanos(t.prog.Pid())
		if err != nil {
			return err
		}
		if r.failed() > 0 || r.Count != s.calls {
			return fmt.Errorf("%s: %d calls, %d failed, want %d and none", t.name, r.Count, r.failed(), s.calls)
		}
		us := float64(after-before) / float64(r.Count) / 1e3
		perCall[t.name] = append(perCall[t.name], us)
		fmt.Printf("round %d %-4s  %6.2f µs CPU per call  (%.0f calls/s achieved)\n", round+1, t.name, us, r.RPS)
		return nil
	})
	if err != nil {
		return err
	}
	var ratios []float64
	for i := range perCall["ours"] {
		ratios = append(ratios, perCall["ours"][i]/perCall["bare"][i])
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\tmedian\tmin\tmax")
	for _, name := range []string{"ours", "bare"} {
		lo, hi := minMax(perCall[name])
		fmt.Fprintf(w, "%s µs/call\t%.2f\t%.2f\t%.2f\n", name, median(perCall[name]), lo, hi)
	}
	lo, hi := minMax(ratios)
	fmt.Fprintf(w, "ours/bare (per round)\t%.3f\t%.3f\t%.3f\n", median(ratios), lo, hi)
	w.Flush()
	fmt.Println("target: ours/bare <= 1.05 (request ids, exemplars and native histograms on)")
	rep.add("CPU per call µs, ours / bare (median)", fmt.Sprintf("%.2f / %.2f", median(perCall["ours"]), median(perCall["bare"])))
	rep.add("CPU per call ours/bare, median [min, max] (target <= 1.05)", fmt.Sprintf("%.3f [%.3f, %.3f]", median(ratios), lo, hi))
	return nil
}

func throughput(ctx context.Context, s settings, b binaries, ours, bare *program, rep *report) error {
	type result struct{ rps, p50, p99 []float64 }
	results := map[string]*result{"ours": {}, "bare": {}}
	err := alternate(s.rounds, target{"ours", ours}, target{"bare", bare}, func(round int, t target) error {
		r, err := ghz(ctx, b, s.root, t.prog.addrs["grpc"], "-c", strconv.Itoa(s.concurrency), "-z", s.duration.String(), "--duration-stop", "ignore")
		if err != nil {
			return err
		}
		res := results[t.name]
		res.rps, res.p50, res.p99 = append(res.rps, r.RPS), append(res.p50, r.percentileMs(50)), append(res.p99, r.percentileMs(99))
		fmt.Printf("round %d %-4s  %8.0f calls/s  p50 %.2f ms  p99 %.2f ms  %d failed\n", round+1, t.name, r.RPS, r.percentileMs(50), r.percentileMs(99), r.failed())
		return nil
	})
	if err != nil {
		return err
	}
	var ratios []float64
	for i := range results["ours"].rps {
		ratios = append(ratios, results["ours"].rps[i]/results["bare"].rps[i])
	}
	lo, hi := minMax(ratios)
	fmt.Printf("ours/bare calls/s per round: median %.3f [%.3f, %.3f]\n", median(ratios), lo, hi)
	rep.add("throughput ours/bare, median [min, max] (noise-bound)", fmt.Sprintf("%.3f [%.3f, %.3f]", median(ratios), lo, hi))
	rep.add("throughput calls/s ours / bare (median)", fmt.Sprintf("%.0f / %.0f", median(results["ours"].rps), median(results["bare"].rps)))
	return nil
}

// formats of the scrape measurement, with the Accept header Prometheus sends.
var formats = []struct{ name, accept string }{
	{"text", "text/plain;version=0.0.4"},
	{"openmetrics", "application/openmetrics-text;version=1.0.0"},
	{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
}

type scrapeResult struct {
	micros float64
	bytes  int
	series int
}

// scrapeAll fetches url 20 times in each format: median latency, size, and
// the series of the text format (lines that are not comments).
func scrapeAll(url string) (map[string]scrapeResult, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	out := map[string]scrapeResult{}
	for _, f := range formats {
		var times []float64
		var body []byte
		for range 20 {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Accept", f.accept)
			start := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			times = append(times, float64(time.Since(start).Microseconds()))
		}
		r := scrapeResult{micros: median(times), bytes: len(body)}
		if f.name == "text" {
			sc := bufio.NewScanner(bytes.NewReader(body))
			for sc.Scan() {
				if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
					r.series++
				}
			}
		}
		out[f.name] = r
	}
	return out, nil
}

// rss returns a memory field of /proc/PID/status (VmRSS, VmHWM) in MiB.
func rss(pid int, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib / 1024
		}
	}
	return 0
}

// clientMemory runs the client idle (1 call/s) and unlimited against addr.
func clientMemory(ctx context.Context, b binaries, addr string, s settings) (idle, peak, rate float64, err error) {
	seconds := 10
	if s.quick {
		seconds = 3
	}
	env := []string{"CLIENT_SERVER_ADDR=" + addr, "CLIENT_METRICS_PORT=0"}
	c, err := startProgram(ctx, b.client, "metrics", append(env, "CLIENT_RATE=1"))
	if err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(3 * time.Second)
	idle = rss(c.Pid(), "VmRSS")
	c.stop()
	c, err = startProgram(ctx, b.client, "metrics", append(env, "CLIENT_RATE=100000", fmt.Sprintf("CLIENT_CONCURRENCY=%d", s.concurrency)))
	if err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(time.Duration(seconds) * time.Second)
	peak = rss(c.Pid(), "VmHWM")
	mfs, err := proctest.Scrape("http://" + c.addrs["metrics"] + "/metrics")
	if err != nil {
		c.stop()
		return 0, 0, 0, err
	}
	calls := proctest.Value(mfs, "echo_client_calls_total", nil)
	c.stop()
	return idle, peak, calls / float64(seconds), nil
}

// micro runs the in-process benchmarks and has benchstat compare the
// servers: the sub-benchmarks are named server=bare, server=ours/log=info...
func micro(ctx context.Context, s settings, b binaries, dir string) error {
	// Ours against bare, then each part of ours alone against bare: where
	// the difference goes.
	for _, run := range []struct{ bench, col string }{
		{"^BenchmarkEcho(Call|Handler)$", "/server"},
		{"^BenchmarkEchoCallPart$", "/part"},
	} {
		cmd := exec.CommandContext(ctx, b.serverTest, "-test.run", "^$", "-test.bench", run.bench, "-test.benchmem",
			"-test.count", strconv.Itoa(s.microCount))
		cmd.Dir = filepath.Join(s.root, "services", "server")
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("micro benchmarks %s: %w\n%s", run.bench, err, out)
		}
		file := filepath.Join(dir, "micro.txt")
		if err := os.WriteFile(file, out, 0o644); err != nil {
			return err
		}
		bs := exec.CommandContext(ctx, "go", "tool", "benchstat", "-col", run.col, file)
		bs.Dir = filepath.Join(s.root, "infra")
		bs.Stdout, bs.Stderr = os.Stdout, os.Stderr
		if err := bs.Run(); err != nil {
			return err
		}
	}
	return nil
}

func innerLoop(ctx context.Context, s settings, b binaries, dir string, rep *report) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "binary\tMiB")
	sizes := map[string]float64{}
	for name, path := range map[string]string{"server": b.server, "client": b.client, "bareserver": b.bare} {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		sizes[name] = float64(st.Size()) / (1 << 20)
	}
	for _, name := range []string{"server", "client", "bareserver"} {
		fmt.Fprintf(w, "%s\t%.1f\n", name, sizes[name])
	}
	w.Flush()
	rep.add("binary MiB server, client (bare)", fmt.Sprintf("%.1f, %.1f (%.1f)", sizes["server"], sizes["client"], sizes["bareserver"]))

	starts := map[string][]float64{}
	err := alternate(s.starts, target{name: "ours"}, target{name: "bare"}, func(_ int, t target) error {
		path, env, args := b.server, []string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0"}, []string(nil)
		if t.name == "bare" {
			path, env, args = b.bare, nil, []string{"-addr", "127.0.0.1:0"}
		}
		ms, err := startToServing(ctx, path, env, args)
		if err != nil {
			return err
		}
		starts[t.name] = append(starts[t.name], ms)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("exec to SERVING, median of %d: ours %.1f ms, bare %.1f ms\n", s.starts, median(starts["ours"]), median(starts["bare"]))
	rep.add("exec to SERVING ms, ours (bare)", fmt.Sprintf("%.1f (%.1f)", median(starts["ours"]), median(starts["bare"])))

	// Rebuild after a one-line edit, warm cache, in a copy of the sources so
	// the working tree is never touched.
	src := filepath.Join(dir, "src")
	for _, p := range []string{"go.mod", "go.sum", "proto", "services", "scripts/build"} {
		dst := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-r", filepath.Join(s.root, p), dst).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %w %s", p, err, out)
		}
	}
	var rebuilds []float64
	for i := range s.edits + 1 {
		f := filepath.Join(src, "services", "server", "echo.go")
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f, fmt.Appendf(data, "\n// edit %d\n", i), 0o644); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "scripts/build", "server", filepath.Join(dir, "rebuilt"))
		cmd.Dir = src
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rebuild: %w\n%s", err, out)
		}
		if i > 0 { // the first warms the cache
			rebuilds = append(rebuilds, float64(time.Since(start).Milliseconds()))
		}
	}
	fmt.Printf("rebuild after a one-line edit (scripts/build, warm cache): median %.0f ms of %v\n", median(rebuilds), rebuilds)
	rep.add("rebuild after a one-line edit ms", fmt.Sprintf("%.0f", median(rebuilds)))
	return nil
}

// startToServing times exec to the first SERVING answer of grpc.health.v1.
func startToServing(ctx context.Context, path string, env, args []string) (float64, error) {
	start := time.Now()
	p, err := startProgram(ctx, path, "grpc", env, args...)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	conn, err := grpc.NewClient(p.addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for time.Since(start) < 10*time.Second {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return float64(time.Since(start).Microseconds()) / 1000, nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, errors.New("not SERVING within 10s")
}

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

func minMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	return slices.Min(xs), slices.Max(xs)
}
