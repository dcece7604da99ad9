// Command install puts the pinned tools of the dev environment into a
// folder (scripts/up uses ./bin): tilt, ctlptl, kind and kubectl for this
// machine. Each download is checked against the checksum its release
// publishes, fetched at run time; a tool already there at its pinned version
// is kept.
//
//	go -C scripts run ./install DIR
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The pins. kind's default node image, which ctlptl.yaml uses, is the one
// its release was built with.
const (
	tiltVersion    = "0.37.6"
	ctlptlVersion  = "0.9.3"
	kindVersion    = "0.33.0"
	kubectlVersion = "1.37.0" // the minor version of kind's default node
)

// downloadTimeout bounds each download: the largest, kubectl, is ~60 MB.
const downloadTimeout = 5 * time.Minute

func main() {
	if err := run(context.Background(), os.Args[1:], runtime.GOOS, runtime.GOARCH); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, goos, goarch string) error {
	if len(args) != 1 {
		return errors.New("usage: install DIR")
	}
	tools, err := pinned(goos, goarch)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(args[0], 0o755); err != nil {
		return err
	}
	for _, t := range tools {
		if err := t.install(ctx, http.DefaultClient, args[0]); err != nil {
			return fmt.Errorf("%s %s: %w", t.name, t.version, err)
		}
	}
	return nil
}

// tool is one binary to install from a release.
type tool struct {
	name, version string
	url           string // of the binary, or of a .tar.gz holding it
	sumsURL       string // of the checksums: a "SHA256  FILE" list, or the bare hash
}

// pinned returns the tools for an OS and architecture.
func pinned(goos, goarch string) ([]tool, error) {
	if goos != "linux" && goos != "darwin" {
		return nil, fmt.Errorf("no releases for %s: install tilt, ctlptl, kind and kubectl yourself", goos)
	}
	if goarch != "amd64" && goarch != "arm64" {
		return nil, fmt.Errorf("no releases for %s: install tilt, ctlptl, kind and kubectl yourself", goarch)
	}
	// Tilt and ctlptl name their archives NAME.VERSION.<linux|mac>.<x86_64|arm64>.tar.gz.
	relOS, relArch := goos, goarch
	if goos == "darwin" {
		relOS = "mac"
	}
	if goarch == "amd64" {
		relArch = "x86_64"
	}
	tiltDev := func(name, version string) tool {
		base := fmt.Sprintf("https://github.com/tilt-dev/%s/releases/download/v%s/", name, version)
		return tool{name, version, base + fmt.Sprintf("%s.%s.%s.%s.tar.gz", name, version, relOS, relArch), base + "checksums.txt"}
	}
	kind := fmt.Sprintf("https://github.com/kubernetes-sigs/kind/releases/download/v%s/kind-%s-%s", kindVersion, goos, goarch)
	kubectl := fmt.Sprintf("https://dl.k8s.io/release/v%s/bin/%s/%s/kubectl", kubectlVersion, goos, goarch)
	return []tool{
		tiltDev("tilt", tiltVersion),
		tiltDev("ctlptl", ctlptlVersion),
		{"kind", kindVersion, kind, kind + ".sha256sum"},
		{"kubectl", kubectlVersion, kubectl, kubectl + ".sha256"},
	}, nil
}

// install downloads t into dir unless dir holds it at its version already.
func (t tool) install(ctx context.Context, c *http.Client, dir string) error {
	dst := filepath.Join(dir, t.name)
	stamp := filepath.Join(dir, "."+t.name+".version")
	if v, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(v)) == t.version {
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
	}
	sums, err := fetch(ctx, c, t.sumsURL)
	if err != nil {
		return err
	}
	want, err := checksumFor(sums, filepath.Base(t.url))
	if err != nil {
		return err
	}
	data, err := fetch(ctx, c, t.url)
	if err != nil {
		return err
	}
	if err := verify(data, want); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(t.url), err)
	}
	if strings.HasSuffix(t.url, ".tar.gz") {
		if data, err = fromTarGz(data, t.name); err != nil {
			return err
		}
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	fmt.Printf("installed %s %s into %s\n", t.name, t.version, dir)
	return os.WriteFile(stamp, []byte(t.version+"\n"), 0o644)
}

func fetch(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// checksumFor finds file's SHA-256 in a checksums file: the lines
// "HASH  FILE" of goreleaser's checksums.txt and of sha256sum, or a bare hash
// (the .sha256 files of dl.k8s.io).
func checksumFor(sums []byte, file string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 1 && isSHA256(fields[0]):
			return fields[0], nil
		case len(fields) == 2 && isSHA256(fields[0]) && strings.TrimPrefix(fields[1], "*") == file:
			return fields[0], nil
		}
	}
	return "", fmt.Errorf("the release publishes no checksum for %s", file)
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

func verify(data []byte, want string) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, want) {
		return fmt.Errorf("checksum mismatch: got %s, want %s", got, want)
	}
	return nil
}

// fromTarGz returns the file named name at the top of a .tar.gz archive.
func fromTarGz(data []byte, name string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("archive has no file %s", name)
		}
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if h.Typeflag == tar.TypeReg && strings.TrimPrefix(h.Name, "./") == name {
			return io.ReadAll(tr)
		}
	}
}
