package platform

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRulesCountTheServerFaults: the error-ratio rules match exactly the
// codes of ServerFault, the one list.
func TestRulesCountTheServerFaults(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "infra", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range ServerFaultCodes() {
		names = append(names, c.String())
	}
	want := strings.Join(names, "|")
	matchers := regexp.MustCompile(`grpc_code=~"([^"]*)"`).FindAllStringSubmatch(string(data), -1)
	if len(matchers) == 0 {
		t.Fatal("rules.yml matches no grpc_code")
	}
	for _, m := range matchers {
		if m[1] != want {
			t.Errorf("rules.yml counts grpc_code=~%q as server faults, want %q (platform.ServerFault)", m[1], want)
		}
	}
}
