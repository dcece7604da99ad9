package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPinnedAssetNames(t *testing.T) {
	tests := []struct {
		goos, goarch string
		want         []string
	}{
		{"linux", "amd64", []string{
			"https://github.com/tilt-dev/tilt/releases/download/v0.37.6/tilt.0.37.6.linux.x86_64.tar.gz",
			"https://github.com/tilt-dev/ctlptl/releases/download/v0.9.3/ctlptl.0.9.3.linux.x86_64.tar.gz",
			"https://github.com/kubernetes-sigs/kind/releases/download/v0.33.0/kind-linux-amd64",
			"https://dl.k8s.io/release/v1.37.0/bin/linux/amd64/kubectl",
		}},
		{"darwin", "arm64", []string{
			"https://github.com/tilt-dev/tilt/releases/download/v0.37.6/tilt.0.37.6.mac.arm64.tar.gz",
			"https://github.com/tilt-dev/ctlptl/releases/download/v0.9.3/ctlptl.0.9.3.mac.arm64.tar.gz",
			"https://github.com/kubernetes-sigs/kind/releases/download/v0.33.0/kind-darwin-arm64",
			"https://dl.k8s.io/release/v1.37.0/bin/darwin/arm64/kubectl",
		}},
	}
	for _, tt := range tests {
		tools, err := pinned(tt.goos, tt.goarch)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tool := range tools {
			got = append(got, tool.url)
		}
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("%s/%s: urls\n%s\nwant\n%s", tt.goos, tt.goarch, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
	for _, bad := range [][2]string{{"windows", "amd64"}, {"linux", "386"}} {
		if _, err := pinned(bad[0], bad[1]); err == nil {
			t.Errorf("pinned(%s, %s) succeeded, want an error", bad[0], bad[1])
		}
	}
}

func TestChecksumFor(t *testing.T) {
	h1, h2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	tests := []struct {
		name, sums, file, want, wantErr string
	}{
		{name: "goreleaser list", sums: h1 + "  tilt.0.37.6.linux.x86_64.tar.gz\n" + h2 + "  tilt.0.37.6.mac.arm64.tar.gz\n", file: "tilt.0.37.6.mac.arm64.tar.gz", want: h2},
		{name: "sha256sum binary mode", sums: h1 + " *kind-linux-amd64\n", file: "kind-linux-amd64", want: h1},
		{name: "bare hash", sums: h2 + "\n", file: "kubectl", want: h2},
		{name: "file not listed", sums: h1 + "  other\n", file: "kind-linux-amd64", wantErr: "no checksum for kind-linux-amd64"},
		{name: "not a hash", sums: "deadbeef  kubectl\n", file: "kubectl", wantErr: "no checksum"},
		{name: "empty", sums: "", file: "kubectl", wantErr: "no checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checksumFor([]byte(tt.sums), tt.file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body)) //nolint:errcheck // a bytes.Buffer
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestInstall serves a release on loopback: the archive is verified, the
// binary extracted, and a second run keeps it; a tampered archive is refused
// and leaves nothing behind.
func TestInstall(t *testing.T) {
	archive := tarGz(t, map[string]string{"LICENSE": "text", "tilt": "#!/bin/sh\necho tilt\n"})
	sums := sha(archive) + "  tilt.1.0.0.linux.x86_64.tar.gz\n"
	served := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		switch r.URL.Path {
		case "/checksums.txt":
			fmt.Fprint(w, sums)
		case "/tilt.1.0.0.linux.x86_64.tar.gz":
			w.Write(archive) //nolint:errcheck // the test reads the result
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	tl := tool{name: "tilt", version: "1.0.0", url: srv.URL + "/tilt.1.0.0.linux.x86_64.tar.gz", sumsURL: srv.URL + "/checksums.txt"}
	if err := tl.install(t.Context(), srv.Client(), dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "tilt"))
	if err != nil || string(got) != "#!/bin/sh\necho tilt\n" {
		t.Fatalf("installed tilt = %q, %v", got, err)
	}
	before := served
	if err := tl.install(t.Context(), srv.Client(), dir); err != nil || served != before {
		t.Errorf("second install: %v, %d requests; want none", err, served-before)
	}

	archive = tarGz(t, map[string]string{"tilt": "tampered"})
	other := t.TempDir()
	err = tl.install(t.Context(), srv.Client(), other)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("tampered archive: error %v, want a checksum mismatch", err)
	}
	if entries, _ := os.ReadDir(other); len(entries) != 0 {
		t.Errorf("a refused download left %v behind", entries)
	}
	if _, err := fromTarGz(archive, "kind"); err == nil {
		t.Error("fromTarGz found a file the archive lacks")
	}
}
