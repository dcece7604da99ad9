package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// withServers runs the sections that measure the servers running: the CPU
// per call, the throughput and, after that load, the scrape and memory. Ours
// and the ecosystem's defaults export their spans to an OTLP receiver in
// this process, whose work is not the servers'.
func withServers(ctx context.Context, s settings, bin binaries, rep *report) error {
	sink, err := proctest.StartOTLPSink()
	if err != nil {
		return err
	}
	defer sink.Stop()
	// Batches every 100ms: the spans are counted soon after the calls.
	exporting := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY=100"}
	// With -profile, each server has a pprof listener as well.
	oursEnv, baselineArgs := []string{"SERVER_GRPC_PORT=0", "SERVER_METRICS_PORT=0"}, []string{"-addr", "127.0.0.1:0"}
	if s.profile != "" {
		oursEnv, baselineArgs = append(oursEnv, "SERVER_DEBUG_PORT=0"), append(baselineArgs, "-debug-addr", "127.0.0.1:0")
	}
	ours, err := startProgram(ctx, bin.server, "grpc", append(oursEnv, exporting...))
	if err != nil {
		return err
	}
	defer ours.stop()
	bare, err := startProgram(ctx, bin.baseline, "grpc", nil, append([]string{"-stack", "bare"}, baselineArgs...)...)
	if err != nil {
		return err
	}
	defer bare.stop()
	metricsURL := "http://" + ours.addrs["metrics"] + "/metrics"
	fresh, err := scrapeAll(metricsURL)
	if err != nil {
		return err
	}
	idleOurs, idleBare := rss(ours, "VmRSS"), rss(bare, "VmRSS")

	if s.runs("cpu") {
		defaults, err := startProgram(ctx, bin.baseline, "grpc", append([]string{"OTEL_SERVICE_NAME=defaults"}, exporting...), append([]string{"-stack", "defaults"}, baselineArgs...)...)
		if err != nil {
			return err
		}
		defer defaults.stop()
		targets := []target{{"ours", ours, "server"}, {"defaults", defaults, "defaults"}, {"bare", bare, ""}}
		if bin.serverAt != "" {
			// The same server at another revision, its spans told apart by
			// their service name.
			name := "ours@" + s.compare
			before, err := startProgram(ctx, bin.serverAt, "grpc", append(append(oursEnv, exporting...), "OTEL_SERVICE_NAME="+name))
			if err != nil {
				return err
			}
			defer before.stop()
			targets = append(targets, target{name, before, name})
		}
		if err := cpuSection(ctx, s, bin, targets, sink, rep); err != nil {
			return err
		}
	}
	if err := loadSection(ctx, s, bin, ours, bare, rep); err != nil {
		return err
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

// cpuSection measures the server CPU per call of each target in turn and,
// with -profile, takes a CPU profile of each.
func cpuSection(ctx context.Context, s settings, bin binaries, targets []target, sink *proctest.OTLPSink, rep *report) error {
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.name
	}
	section(fmt.Sprintf("cpu: server CPU per call at %d calls/s, %d calls a run, %d rounds, %s in turn", s.rate, s.calls, s.rounds, strings.Join(names, ", ")))
	if err := cpuPerCall(ctx, s, bin, targets, sink, rep); err != nil {
		return err
	}
	if s.profile != "" {
		section(fmt.Sprintf("cpu profiles: each server at %d calls/s for %v", s.rate, profileTime))
		if err := profiles(ctx, s, bin, targets); err != nil {
			return err
		}
	}
	return nil
}

// loadSection measures the throughput of ours and bare; or, when only the
// scrape or the memory sections run, puts each under the load they are
// measured after.
func loadSection(ctx context.Context, s settings, bin binaries, ours, bare *program, rep *report) error {
	if s.runs("throughput") {
		section(fmt.Sprintf("throughput: ghz -c %d for %v, %d rounds (noise-bound on a shared 2-core machine: secondary)", s.concurrency, s.duration, s.rounds))
		return throughput(ctx, s, bin, ours, bare, rep)
	}
	if s.runs("scrape") || s.runs("memory") {
		// The load the scrape and the peak memory are measured after.
		section(fmt.Sprintf("load: ghz -c %d for %v on each server", s.concurrency, s.duration))
		for _, p := range []*program{ours, bare} {
			r, err := load(ctx, s, bin, p)
			if err != nil {
				return err
			}
			fmt.Printf("%8.0f calls/s, %d failed\n", r.RPS, r.failed())
		}
	}
	return nil
}

// target is one server measured.
type target struct {
	name    string
	prog    *program
	service string // the service name of its spans; "" when it exports none
}

// rotate yields the targets of each round in turn, the order rotated every
// round so that none always runs on a machine warmed by another.
func rotate(rounds int, targets []target, f func(round int, t target) error) error {
	for i := range rounds {
		for j := range targets {
			if err := f(i, targets[(i+j)%len(targets)]); err != nil {
				return err
			}
		}
	}
	return nil
}

// cpuPerCall measures each target's CPU time per call at a fixed rate, the
// headline, and checks that the tracing ones exported a span per call.
func cpuPerCall(ctx context.Context, s settings, b binaries, targets []target, sink *proctest.OTLPSink, rep *report) error {
	sent := map[string]int{}
	// Warm each: connections, goroutines, the first exemplars and batches.
	for _, t := range targets {
		if _, err := ghz(ctx, b, s.root, t.prog.addrs["grpc"], "-n", "2000", "-c", "8", "--rps", strconv.Itoa(s.rate)); err != nil {
			return err
		}
		sent[t.name] += 2000
	}
	perCall := map[string][]float64{}
	err := rotate(s.rounds, targets, func(round int, t target) error {
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
		sent[t.name] += r.Count
		us := float64(after-before) / float64(r.Count) / 1e3
		perCall[t.name] = append(perCall[t.name], us)
		fmt.Printf("round %d %-8s  %6.2f µs CPU per call  (%.0f calls/s achieved)\n", round+1, t.name, us, r.RPS)
		return nil
	})
	if err != nil {
		return err
	}
	// ratio returns a's figure over b's, round by round.
	ratio := func(a, b string) []float64 {
		var out []float64
		for i := range perCall[a] {
			out = append(out, perCall[a][i]/perCall[b][i])
		}
		return out
	}
	w := table()
	fmt.Fprintln(w, "\tmedian [min, max]")
	for _, t := range targets {
		fmt.Fprintf(w, "%s µs/call\t%s\n", t.name, spread("%.2f", perCall[t.name]))
	}
	pairs := [][2]string{{"ours", "defaults"}, {"ours", "bare"}, {"defaults", "bare"}}
	if len(targets) > 3 {
		before := targets[3].name
		pairs = append(pairs, [2]string{"ours", before}, [2]string{before, "defaults"}, [2]string{before, "bare"})
	}
	for _, pair := range pairs {
		fmt.Fprintf(w, "%s/%s (per round)\t%s\n", pair[0], pair[1], spread("%.3f", ratio(pair[0], pair[1])))
	}
	w.Flush()
	// The spans of the last calls arrive within a batch or two.
	time.Sleep(time.Second)
	for _, t := range targets {
		if t.service == "" {
			continue
		}
		spans := sink.Count(t.service)
		fmt.Printf("%s exported %d spans for %d calls (%.3f a call)\n", t.name, spans, sent[t.name], float64(spans)/float64(sent[t.name]))
		if spans < sent[t.name] {
			return fmt.Errorf("%s exported %d spans for %d calls: the comparison is void", t.name, spans, sent[t.name])
		}
	}
	fmt.Println("targets: ours/defaults <= 1.00, ours/bare <= 1.15 (ours adds native histograms, exemplars, the echo metrics and the call log)")
	rep.add("CPU per call µs, ours / defaults / bare (median)", fmt.Sprintf("%.2f / %.2f / %.2f", median(perCall["ours"]), median(perCall["defaults"]), median(perCall["bare"])))
	rep.add("CPU per call ours/defaults, median [min, max] (target <= 1.00)", spread("%.3f", ratio("ours", "defaults")))
	rep.add("CPU per call ours/bare, median [min, max] (target <= 1.15)", spread("%.3f", ratio("ours", "bare")))
	if len(targets) > 3 {
		before := targets[3].name
		rep.add(fmt.Sprintf("CPU per call ours/%s, median [min, max]", before), spread("%.3f", ratio("ours", before)))
		rep.add(fmt.Sprintf("CPU per call %s/defaults, /bare (median)", before), fmt.Sprintf("%.3f, %.3f", median(ratio(before, "defaults")), median(ratio(before, "bare"))))
	}
	return nil
}

// profileTime is the length of each CPU profile: pprof samples 100 times a
// CPU-second, and a server spends well under a CPU-second a second here.
const profileTime = 30 * time.Second

// profiles writes a CPU profile of each target, taken from its pprof
// listener while ghz calls it as the cpu section does, to s.profile.
func profiles(ctx context.Context, s settings, b binaries, targets []target) error {
	if err := os.MkdirAll(s.profile, 0o755); err != nil {
		return err
	}
	for _, t := range targets {
		file := filepath.Join(s.profile, t.name+".pprof")
		profiled := make(chan error, 1)
		go func() { profiled <- fetchProfile(ctx, t.prog.addrs["debug"], file) }()
		// The calls outlast the profile by a little at each end.
		calls := s.rate * int(profileTime.Seconds()+1)
		r, err := ghz(ctx, b, s.root, t.prog.addrs["grpc"], "-n", strconv.Itoa(calls), "-c", "8", "--rps", strconv.Itoa(s.rate))
		if err != nil {
			return err
		}
		if err := <-profiled; err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		fmt.Printf("%-8s  %s  (%d calls, %d failed)\n", t.name, file, r.Count, r.failed())
	}
	fmt.Printf("read them with: go tool pprof -top %s\n", filepath.Join(s.profile, "ours.pprof"))
	return nil
}

// fetchProfile writes the CPU profile of profileTime that the pprof
// listener at addr takes to file.
func fetchProfile(ctx context.Context, addr, file string) error {
	if addr == "" {
		return errors.New("no pprof listener")
	}
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(profileTime.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

func throughput(ctx context.Context, s settings, b binaries, ours, bare *program, rep *report) error {
	type result struct{ rps, p50, p99 []float64 }
	results := map[string]*result{"ours": {}, "bare": {}}
	err := rotate(s.rounds, []target{{name: "ours", prog: ours}, {name: "bare", prog: bare}}, func(round int, t target) error {
		r, err := load(ctx, s, b, t.prog)
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
	fmt.Printf("ours/bare calls/s per round: median %s\n", spread("%.3f", ratios))
	rep.add("throughput ours/bare, median [min, max] (noise-bound)", spread("%.3f", ratios))
	rep.add("throughput calls/s ours / bare (median)", fmt.Sprintf("%.0f / %.0f", median(results["ours"].rps), median(results["bare"].rps)))
	return nil
}

// load runs ghz against p at s.concurrency for s.duration.
func load(ctx context.Context, s settings, b binaries, p *program) (ghzReport, error) {
	return ghz(ctx, b, s.root, p.addrs["grpc"], "-c", strconv.Itoa(s.concurrency), "-z", s.duration.String(), "--duration-stop", "ignore")
}
