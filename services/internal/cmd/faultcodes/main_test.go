package main

import (
	"strings"
	"testing"

	"example.com/grpc-metrics/services/internal/platform"
)

func TestWithCodes(t *testing.T) {
	in := `expr: rate(a{grpc_code=~"Unknown"}[1m]) / rate(b{grpc_code=~""}[1m])`
	got, err := withCodes([]byte(in))
	var names []string
	for _, c := range platform.ServerFaultCodes() {
		names = append(names, c.String())
	}
	codes := strings.Join(names, "|")
	want := `expr: rate(a{grpc_code=~"` + codes + `"}[1m]) / rate(b{grpc_code=~"` + codes + `"}[1m])`
	if err != nil || string(got) != want {
		t.Errorf("withCodes:\n got %s (%v)\nwant %s", got, err, want)
	}
	if _, err := withCodes([]byte(`expr: up == 0`)); err == nil || !strings.Contains(err.Error(), "no grpc_code") {
		t.Errorf("a file with no matcher: %v", err)
	}
}
