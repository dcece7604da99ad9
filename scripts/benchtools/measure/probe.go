package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pollInterval is how often startup retries a connection or a health check:
// short against start-up times of a few milliseconds.
const pollInterval = 200 * time.Microsecond

// ports prints n distinct free TCP ports of the loopback interface.
func ports(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: measure ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("ports: %q is not a positive number", args[0])
	}
	var found []string
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("ports: %w", err)
		}
		defer lis.Close() // held until all are chosen, so they differ
		found = append(found, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(found, " "))
	return nil
}

// program is one program whose start-up is timed.
type program struct {
	name, addr string
	argv       []string
}

// startup starts each program n times, alternating between them so that all
// see the same machine, and prints for each the median, fastest and slowest
// time from exec to SERVING.
func startup(args []string) error {
	fs := flag.NewFlagSet("startup", flag.ContinueOnError)
	n := fs.Int("n", 10, "number of starts of each program")
	timeout := fs.Duration("timeout", 10*time.Second, "longest wait for SERVING")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var progs []program
	rest := fs.Args()
	for len(rest) > 0 {
		var spec []string
		if i := slices.Index(rest, "--"); i >= 0 {
			spec, rest = rest[:i], rest[i+1:]
		} else {
			spec, rest = rest, nil
		}
		if len(spec) < 3 {
			return errors.New("usage: measure startup [-n 10] NAME HOST:PORT PROGRAM [ARGS] [-- NAME HOST:PORT PROGRAM [ARGS]]...")
		}
		progs = append(progs, program{name: spec[0], addr: spec[1], argv: spec[2:]})
	}
	if len(progs) == 0 {
		return errors.New("startup: no program given")
	}
	times := make([][]float64, len(progs))
	for range *n {
		for i, p := range progs {
			d, err := startOnce(p.argv, p.addr, *timeout)
			if err != nil {
				return fmt.Errorf("startup of %s: %w", p.name, err)
			}
			times[i] = append(times[i], float64(d.Microseconds())/1000)
		}
	}
	for i, p := range progs {
		lo, hi := minMax(times[i])
		fmt.Printf("startup_ms %s %.1f %.1f %.1f\n", p.name, median(times[i]), lo, hi)
	}
	return nil
}

// startOnce runs argv until its health service answers SERVING, then stops it
// with SIGTERM and waits for it to exit.
func startOnce(argv []string, addr string, timeout time.Duration) (time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := waitServing(ctx, addr, exited); err != nil {
		return 0, fmt.Errorf("%w: %s", err, stderr.String())
	}
	return time.Since(start), nil
}

// wait waits until the health service at ADDR answers SERVING.
func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "longest wait for SERVING")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: measure wait [-timeout 10s] HOST:PORT")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return waitServing(ctx, fs.Arg(0), nil)
}

// waitServing polls the health service at addr until it answers SERVING, ctx
// ends or exited (the program's exit, may be nil) fires.
func waitServing(ctx context.Context, addr string, exited <-chan error) error {
	// Dial until the listener is up: grpc-go's reconnect backoff would blur
	// the figure by up to a second.
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before listening on %s (%v)", addr, err)
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s: %w", addr, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s not SERVING (last: %v, %v): %w", addr, resp.GetStatus(), err, ctx.Err())
		}
		time.Sleep(pollInterval)
	}
}

// scrapeFormats are the exposition formats a scrape asks for: the classic
// text format, and OpenMetrics, which Prometheus prefers and which carries
// the exemplars.
var scrapeFormats = []struct{ name, accept string }{
	{name: "text", accept: "text/plain;version=0.0.4"},
	{name: "openmetrics", accept: "application/openmetrics-text;version=1.0.0"},
}

// scrape GETs url n times in each format and prints, per format, the median
// time of a response read to its end, its size and its number of series.
func scrape(args []string) error {
	fs := flag.NewFlagSet("scrape", flag.ContinueOnError)
	n := fs.Int("n", 20, "number of scrapes per format")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: measure scrape [-n 20] URL")
	}
	url := fs.Arg(0)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, f := range scrapeFormats {
		var times []float64
		var size, series int
		for i := range *n + 1 {
			start := time.Now()
			body, err := get(client, url, f.accept)
			if err != nil {
				return fmt.Errorf("scrape: %w", err)
			}
			if i == 0 {
				continue // warms the connection
			}
			times = append(times, float64(time.Since(start).Microseconds()))
			size, series = len(body), countSeries(body)
		}
		fmt.Printf("scrape_%s %.0f %d %d\n", f.name, median(times), size, series)
	}
	return nil
}

func get(client *http.Client, url, accept string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// countSeries counts the sample lines of an exposition: one per series.
func countSeries(body []byte) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n
}
