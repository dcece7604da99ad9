package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// scrapeSection scrapes the server after the load and compares with fresh:
// cost, size, and whether the series grew with the calls.
func scrapeSection(metricsURL string, fresh map[string]scrapeResult, rep *report) error {
	section("scrape: /metrics of the server, fresh and after the load")
	after, err := scrapeAll(metricsURL)
	if err != nil {
		return err
	}
	w := table()
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
