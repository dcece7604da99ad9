package tiltsession

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyRepository copies the files git knows (tracked, and new ones not
// ignored) into s.dir and commits them in a repository of its own.
func (s *Session) copyRepository(t testing.TB) {
	t.Helper()
	out := s.Git(t, s.h.Root, nil, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(strings.TrimRight(out, "\x00"), "\x00") {
		src, dst := filepath.Join(s.h.Root, f), filepath.Join(s.Dir, f)
		info, err := os.Lstat(src)
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		}
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
	}
	s.Git(t, s.Dir, nil, "init", "-q")
	s.Git(t, s.Dir, nil, "add", "-A")
	s.Git(t, s.Dir, nil, "commit", "-q", "-m", "copy for the live-update loop")
}

// Git runs Git in dir with stdin and returns its output.
func (s *Session) Git(t testing.TB, dir string, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@localhost",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@localhost")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// CommitAndWrite makes content the new version of path: first a commit in
// the copy's repository (without touching the work tree, which Tilt
// watches), then the file itself, so the build it triggers reports that
// commit as its revision. It returns the commit hash.
func (s *Session) CommitAndWrite(t testing.TB, path string, content []byte) string {
	t.Helper()
	blob := strings.TrimSpace(s.Git(t, s.Dir, content, "hash-object", "-w", "--stdin"))
	s.Git(t, s.Dir, nil, "update-index", "--add", "--cacheinfo", "100644,"+blob+","+path)
	tree := strings.TrimSpace(s.Git(t, s.Dir, nil, "write-tree"))
	commit := strings.TrimSpace(s.Git(t, s.Dir, nil, "commit-tree", tree, "-p", "HEAD", "-m", "edit "+path))
	s.Git(t, s.Dir, nil, "update-ref", "HEAD", commit)
	if err := os.WriteFile(filepath.Join(s.Dir, path), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return commit
}
