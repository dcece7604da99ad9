package main

import (
	"context"
	"fmt"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// memorySection reports the resident memory of both servers, idle and at
// their peak, and of the client.
func memorySection(ctx context.Context, s settings, bin binaries, ours, bare *program, idleOurs, idleBare float64, rep *report) error {
	section("memory: resident set")
	peakOurs, peakBare := rss(ours, "VmHWM"), rss(bare, "VmHWM")
	clientIdle, clientPeak, clientRate, err := clientMemory(ctx, bin, ours.addrs["grpc"], s)
	if err != nil {
		return err
	}
	w := table()
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

// rss returns a memory field of p's /proc/PID/status (VmRSS, VmHWM) in MiB.
func rss(p *program, field string) float64 {
	return procKiB(fmt.Sprintf("/proc/%d/status", p.Pid()), field) / 1024
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
	idle = rss(c, "VmRSS")
	c.stop()
	c, err = startProgram(ctx, b.client, "metrics", append(env, "CLIENT_RATE=100000", fmt.Sprintf("CLIENT_CONCURRENCY=%d", s.concurrency)))
	if err != nil {
		return 0, 0, 0, err
	}
	time.Sleep(time.Duration(seconds) * time.Second)
	peak = rss(c, "VmHWM")
	mfs, err := proctest.Scrape("http://" + c.addrs["metrics"] + "/metrics")
	if err != nil {
		c.stop()
		return 0, 0, 0, err
	}
	calls := proctest.Value(mfs, "echo_client_calls_total", nil)
	c.stop()
	return idle, peak, calls / float64(seconds), nil
}
