// Command measure takes and summarises the measurements of scripts/bench.
//
//	measure ports N                      print N free loopback TCP ports
//	measure wait HOST:PORT               wait for grpc.health.v1 SERVING
//	measure startup [-n 10] NAME HOST:PORT PROGRAM [ARGS] [-- NAME ...]
//	                                     start each PROGRAM n times, alternating,
//	                                     and print the time from exec to SERVING
//	measure scrape [-n 20] URL           time GET URL, print its size and series
//	measure ghz NAME=FILE,FILE... ...    summarise ghz JSON reports, one row per
//	                                     name, and the ratio of the first to the second
//	measure gobench [FILE]               summarise go test -bench output (median of
//	                                     the rounds) with the difference to .../bare
//
// Everything it prints is a table for people, except what ports, startup and
// scrape print: lines that scripts/bench reads.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: measure ports|wait|startup|scrape|ghz|gobench ...")
	}
	switch args[0] {
	case "ports":
		return ports(args[1:])
	case "wait":
		return wait(args[1:])
	case "startup":
		return startup(args[1:])
	case "scrape":
		return scrape(args[1:])
	case "ghz":
		return ghzReport(args[1:])
	case "gobench":
		return gobenchReport(args[1:])
	}
	return fmt.Errorf("unknown command %q", args[0])
}
