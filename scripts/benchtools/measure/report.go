package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Targets of the load benchmark (the project's benchmark issue).
const (
	minThroughputRatio = 0.95 // ours/bare requests per second
	maxP99Ratio        = 1.10 // ours/bare 99th percentile latency
)

// ghzResult is the part of a ghz JSON report (--format json) used here.
type ghzResult struct {
	RPS                 float64        `json:"rps"`
	Count               int            `json:"count"`
	StatusCodes         map[string]int `json:"statusCodeDistribution"`
	LatencyDistribution []struct {
		Percentage int     `json:"percentage"`
		Latency    float64 `json:"latency"` // nanoseconds
	} `json:"latencyDistribution"`
}

func (r ghzResult) percentileMs(p int) float64 {
	for _, l := range r.LatencyDistribution {
		if l.Percentage == p {
			return l.Latency / 1e6
		}
	}
	return 0
}

func (r ghzResult) errors() int {
	n := 0
	for code, c := range r.StatusCodes {
		if code != "OK" {
			n += c
		}
	}
	return n
}

func readGHZ(path string) (ghzResult, error) {
	var r ghzResult
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer f.Close()
	if err := json.NewDecoder(f).Decode(&r); err != nil {
		return r, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Count == 0 {
		return r, fmt.Errorf("%s: no request completed", path)
	}
	return r, nil
}

// ghzReport prints each round, the medians and the ratios of the first name
// to the second, computed round by round (the runs of a round are adjacent in
// time, so the ratio cancels most of the machine's drift).
func ghzReport(args []string) error {
	type series struct {
		name    string
		results []ghzResult
	}
	var all []series
	for _, a := range args {
		name, files, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("ghz: %q is not NAME=FILE,FILE", a)
		}
		s := series{name: name}
		for _, p := range strings.Split(files, ",") {
			r, err := readGHZ(p)
			if err != nil {
				return err
			}
			s.results = append(s.results, r)
		}
		all = append(all, s)
	}
	if len(all) != 2 || len(all[0].results) != len(all[1].results) {
		return errors.New("ghz: want two names with the same number of reports")
	}
	ours, bare := all[0], all[1]

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\trequests/s\tp50 ms\tp99 ms\terrors\t")
	var rps, p50, p99 [2][]float64
	var rpsRatio, p50Ratio, p99Ratio []float64
	for i := range ours.results {
		for j, s := range []series{ours, bare} {
			r := s.results[i]
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.3f\t%.3f\t%d\t\n", i+1, s.name, r.RPS, r.percentileMs(50), r.percentileMs(99), r.errors())
			rps[j] = append(rps[j], r.RPS)
			p50[j] = append(p50[j], r.percentileMs(50))
			p99[j] = append(p99[j], r.percentileMs(99))
		}
		o, b := ours.results[i], bare.results[i]
		rpsRatio = append(rpsRatio, o.RPS/b.RPS)
		p50Ratio = append(p50Ratio, o.percentileMs(50)/b.percentileMs(50))
		p99Ratio = append(p99Ratio, o.percentileMs(99)/b.percentileMs(99))
	}
	for j, s := range []series{ours, bare} {
		fmt.Fprintf(tw, "median\t%s\t%.0f\t%.3f\t%.3f\t\t\n", s.name, median(rps[j]), median(p50[j]), median(p99[j]))
	}
	fmt.Fprintf(tw, "median ratio\t%s/%s\t%.3f\t%.3f\t%.3f\t\t\n", ours.name, bare.name, median(rpsRatio), median(p50Ratio), median(p99Ratio))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("throughput ratio %.3f (target >= %.2f): %s\n", median(rpsRatio), minThroughputRatio, verdict(median(rpsRatio) >= minThroughputRatio))
	fmt.Printf("p99 ratio        %.3f (target <= %.2f): %s\n", median(p99Ratio), maxP99Ratio, verdict(median(p99Ratio) <= maxP99Ratio))
	return nil
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}

// benchLine is one result line of go test -bench -benchmem.
type benchLine struct {
	name                   string
	nsOp, bytesOp, allocOp float64
}

// parseBench reads the result lines of go test -bench output, dropping the
// -GOMAXPROCS suffix of the names.
func parseBench(r io.Reader) ([]benchLine, error) {
	var lines []benchLine
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		l := benchLine{name: f[0]}
		if i := strings.LastIndexByte(l.name, '-'); i > 0 {
			if _, err := strconv.Atoi(l.name[i+1:]); err == nil {
				l.name = l.name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bench line %q: %w", sc.Text(), err)
			}
			switch f[i+1] {
			case "ns/op":
				l.nsOp = v
			case "B/op":
				l.bytesOp = v
			case "allocs/op":
				l.allocOp = v
			}
		}
		lines = append(lines, l)
	}
	return lines, sc.Err()
}

// gobenchReport prints the median of each benchmark over the rounds and its
// difference to the bare variant of the same benchmark.
func gobenchReport(args []string) error {
	in := io.Reader(os.Stdin)
	if len(args) == 1 {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	lines, err := parseBench(in)
	if err != nil {
		return err
	}
	var names []string
	byName := map[string][]benchLine{}
	for _, l := range lines {
		if _, ok := byName[l.name]; !ok {
			names = append(names, l.name)
		}
		byName[l.name] = append(byName[l.name], l)
	}
	if len(names) == 0 {
		return errors.New("gobench: no benchmark result in the input")
	}
	med := func(name string) benchLine {
		var ns, b, a []float64
		for _, l := range byName[name] {
			ns, b, a = append(ns, l.nsOp), append(b, l.bytesOp), append(a, l.allocOp)
		}
		return benchLine{name: name, nsOp: median(ns), bytesOp: median(b), allocOp: median(a)}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\trounds\tns/op\tB/op\tallocs/op\t+ns vs bare\t+B vs bare\t+allocs vs bare\t")
	for _, name := range names {
		m := med(name)
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t", name, len(byName[name]), m.nsOp, m.bytesOp, m.allocOp)
		bare := name[:strings.IndexByte(name+"/", '/')] + "/bare"
		if _, ok := byName[bare]; ok && bare != name {
			b := med(bare)
			fmt.Fprintf(tw, "%+.0f\t%+.0f\t%+.0f\t\n", m.nsOp-b.nsOp, m.bytesOp-b.bytesOp, m.allocOp-b.allocOp)
		} else {
			fmt.Fprint(tw, "\t\t\t\n")
		}
	}
	return tw.Flush()
}

// median returns the middle of xs (the mean of the two middle values for an
// even count); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	return slices.Min(xs), slices.Max(xs)
}
