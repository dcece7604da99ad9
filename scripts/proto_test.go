package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The checks of scripts/proto, run on a copy of the contract in a git
// repository of its own, with the tools of this checkout (built once into
// build/tools by scripts/generate).

const seedProto = "proto/foo.proto"

// contract copies scripts/proto, scripts/generate, the module's go.mod and
// go.sum and proto/ into a new git repository (branch main, one commit) and
// links build/tools to this checkout's.
func contract(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(repo, "scripts", "generate"), "--tools").CombinedOutput(); err != nil {
		t.Fatalf("scripts/generate --tools: %v\n%s", err, out)
	}
	root := t.TempDir()
	for _, f := range []string{"scripts/proto", "scripts/generate", "scripts/go.mod", "scripts/go.sum",
		"proto/foo.proto", "proto/buf.yaml", "proto/buf.gen.yaml", "proto/seed/foo.proto",
		"proto/foopb/foo.pb.go", "proto/foopb/foo_grpc.pb.go"} {
		copyFile(t, filepath.Join(repo, f), filepath.Join(root, f))
	}
	if err := os.MkdirAll(filepath.Join(root, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repo, "build", "tools"), filepath.Join(root, "build", "tools")); err != nil {
		t.Fatal(err)
	}
	git(t, root, "init", "-q", "-b", "main")
	git(t, root, "add", "-A")
	git(t, root, "commit", "-q", "-m", "the contract")
	return root
}

// copyFile copies src to dst with its mode and modification time (a newer
// go.mod would make scripts/generate build the tools again).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	info, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@localhost", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@localhost")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// edit replaces old by new in root's foo.proto.
func edit(t *testing.T, root, old, new string) {
	t.Helper()
	path := filepath.Join(root, seedProto)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("foo.proto has no %q", old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs scripts/proto in root and returns its output and whether it
// passed.
func run(t *testing.T, root string, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(filepath.Join(root, "scripts", "proto"), args...).CombinedOutput()
	if _, failed := err.(*exec.ExitError); err != nil && !failed {
		t.Fatal(err)
	}
	return string(out), err == nil
}

// generated is proto/foopb/foo.pb.go of root.
func generated(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "proto", "foopb", "foo.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestProtoGeneratesACompatibleChange(t *testing.T) {
	root := contract(t)
	if out, ok := run(t, root); !ok || !strings.Contains(out, "already current") {
		t.Fatalf("the seed's contract: passed %v, want the generated code current:\n%s", ok, out)
	}
	edit(t, root, "string name = 1;", "string name = 1;\n   string greeting = 2;")
	out, ok := run(t, root)
	if !ok || !strings.Contains(out, "generated proto/foopb/foo.pb.go") {
		t.Fatalf("a new field: passed %v, want foo.pb.go generated:\n%s", ok, out)
	}
	if !strings.Contains(generated(t, root), "GetGreeting()") {
		t.Error("foo.pb.go has no GetGreeting after the new field")
	}
	if out, ok := run(t, root, "--check"); !ok {
		t.Errorf("--check after the new field: failed:\n%s", out)
	}
}

func TestProtoRefusesBreaksAndGeneratesNothing(t *testing.T) {
	for _, tt := range []struct {
		what, old, new string
		says           []string // in the output
		once           bool     // a compile error: named once, not by every check
	}{
		{"a renumbered field", "string name = 1;", "string name = 7;", []string{
			"breaking changes against",
			`proto/foo.proto:15:1:Previously present field "1" with name "name" on message "EchoRequest" was deleted.`,
			"breaks the seed's wire contract",
			`was deleted without reserving the number "1"`,
		}, false},
		{"a renamed package", "package foo;", "package bar;", []string{`proto: Previously present package "foo" was deleted.`}, false},
		{"a removed method", "rpc echo(EchoRequest) returns (EchoReply);", "", []string{`Previously present RPC "echo" on service "Foo" was deleted.`}, false},
		{"a new field on a used number", "string name = 1;", "string name = 1;\n   int64 name_length = 1;", []string{"buf lint:", "proto/foo.proto:17:24:field number `1` used more than once"}, true},
		{"a name lint refuses", "message EchoReply {", "message bad_name {}\n\nmessage EchoReply {", []string{"buf lint:", `Message name "bad_name" should be PascalCase`}, false},
	} {
		t.Run(tt.what, func(t *testing.T) {
			root := contract(t)
			before := generated(t, root)
			edit(t, root, tt.old, tt.new)
			out, ok := run(t, root)
			if ok {
				t.Fatalf("passed:\n%s", out)
			}
			for _, want := range append(tt.says, "nothing generated") {
				if !strings.Contains(out, want) {
					t.Errorf("the output has no %q:\n%s", want, out)
				}
			}
			if generated(t, root) != before {
				t.Error("foo.pb.go changed")
			}
			if n := strings.Count(out, "proto/foo.proto:"); tt.once && n != 1 {
				t.Errorf("%d lines name foo.proto, want the compiler's error once:\n%s", n, out)
			}
		})
	}
}

func TestProtoAllowBreaking(t *testing.T) {
	root := contract(t)
	// A new name for field 1: the branch's code breaks, the wire does not.
	edit(t, root, "string name = 1;", "string full_name = 1;")
	if out, ok := run(t, root); ok || !strings.Contains(out, `changed name from "name" to "full_name"`) {
		t.Fatalf("a renamed field without --allow-breaking: passed %v, want it refused:\n%s", ok, out)
	}
	out, ok := run(t, root, "--allow-breaking")
	if !ok || !strings.Contains(out, "let through by --allow-breaking") || !strings.Contains(generated(t, root), "GetFullName()") {
		t.Fatalf("a renamed field with --allow-breaking: passed %v, want it generated:\n%s", ok, out)
	}
	// The seed's wire contract holds with it too.
	edit(t, root, "string full_name = 1;", "string full_name = 2;")
	if out, ok := run(t, root, "--allow-breaking"); ok || !strings.Contains(out, "breaks the seed's wire contract") {
		t.Fatalf("a renumbered field with --allow-breaking: passed %v, want the seed's contract to refuse it:\n%s", ok, out)
	}
}

func TestProtoComparesWithTheBranchBase(t *testing.T) {
	root := contract(t)
	git(t, root, "checkout", "-q", "-b", "feature")
	edit(t, root, "string name = 1;", "string name = 1;\n   string greeting = 2;")
	git(t, root, "commit", "-q", "-am", "greeting")
	// Removed again before the branch merges: main never had it.
	edit(t, root, "\n   string greeting = 2;", "")
	if out, ok := run(t, root); !ok {
		t.Fatalf("a field added and removed on a branch: failed, want the merge base with main as the base:\n%s", out)
	}

	// Without git: the seed's contract only.
	if err := os.RemoveAll(filepath.Join(root, ".git")); err != nil {
		t.Fatal(err)
	}
	edit(t, root, "string name = 1;", "string full_name = 1;")
	if out, ok := run(t, root); !ok || !strings.Contains(out, "checked against the seed's only") {
		t.Fatalf("no git, a renamed field: passed %v, want the seed's check only:\n%s", ok, out)
	}
}
