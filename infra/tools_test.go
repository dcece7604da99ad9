package infra_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/modfile"
)

// TestDelveOnePin: the Delve that debug mode runs (a tool of scripts/go.mod)
// and the client library TestDebugMode drives it with (infra/go.mod) are one
// version, so the check speaks the API of the debugger users get.
func TestDelveOnePin(t *testing.T) {
	const module = "github.com/go-delve/delve"
	version := func(gomod string) string {
		t.Helper()
		data, err := os.ReadFile(gomod)
		if err != nil {
			t.Fatal(err)
		}
		f, err := modfile.Parse(gomod, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range f.Require {
			if r.Mod.Path == module {
				return r.Mod.Version
			}
		}
		t.Fatalf("%s does not require %s", gomod, module)
		return ""
	}
	tool, lib := version(filepath.Join("..", "scripts", "go.mod")), version("go.mod")
	if tool != lib {
		t.Errorf("Delve %s in scripts/go.mod (the tool), %s in infra/go.mod (the client library): pin one version", tool, lib)
	}
}
