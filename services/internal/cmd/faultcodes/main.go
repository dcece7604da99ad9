// Command faultcodes writes the gRPC codes that count as the server's
// faults (platform.ServerFaultCodes, their one source) into the
// grpc_code=~"..." matchers of a Prometheus rules file, in place.
// scripts/generate runs it on infra/prometheus/rules.yml, and scripts/test
// checks that the file is current.
//
//	go run ./services/internal/cmd/faultcodes FILE
package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"example.com/grpc-metrics/services/internal/platform"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: faultcodes RULES.yml")
		os.Exit(2)
	}
	if err := rewrite(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "faultcodes:", err)
		os.Exit(1)
	}
}

var matcher = regexp.MustCompile(`grpc_code=~"[^"]*"`)

func rewrite(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	out, err := withCodes(data)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return os.WriteFile(file, out, 0o644)
}

// withCodes returns rules with every grpc_code=~ matcher set to the
// server's fault codes.
func withCodes(rules []byte) ([]byte, error) {
	if !matcher.Match(rules) {
		return nil, errors.New(`no grpc_code=~"..." matcher to write the server's fault codes into`)
	}
	var names []string
	for _, c := range platform.ServerFaultCodes() {
		names = append(names, c.String())
	}
	return matcher.ReplaceAllLiteral(rules, []byte(`grpc_code=~"`+strings.Join(names, "|")+`"`)), nil
}
