//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// namespace is the namespace of the environment under test: echo, or
// E2E_NAMESPACE (the Tiltfile's --namespace).
var namespace = "echo"

// Settings, from the environment (scripts/e2e documents them).
type settings struct {
	deploy      string // tilt, kustomize or none
	skipGrafana bool   // E2E_SKIP_GRAFANA=1: Grafana's own checks are skipped, and say so
	faults      bool   // E2E_FAULTS (default 1)
	rate        int    // E2E_RATE: client calls per second during the faults (default 60)
	baseImage   string // E2E_BASE_IMAGE: base of the program images (kustomize)
	tilt        string // the tilt binary, or ""
}

// suite is what TestMain set up for the tests.
var suite struct {
	settings
	c        *cluster
	root     string // the repository
	devBuild bool   // Tilt's dev build: the app containers' root filesystem is writable
}

func TestMain(m *testing.M) {
	code, err := setUp(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setUp(m *testing.M) (int, error) {
	// client-go logs every connection a port-forward loses while a process
	// restarts: expected here, and the forwards start again by themselves.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	s, err := readSettings()
	if err != nil {
		return 0, err
	}
	suite.settings = s
	if suite.root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		return 0, err
	}
	if suite.c, err = connect(); err != nil {
		return 0, err
	}
	fmt.Printf("e2e: kube context %s, deploy %s\n", suite.c.context, s.deploy)
	began := time.Now()
	switch s.deploy {
	case "tilt":
		if err := tiltCI(); err != nil {
			return 0, err
		}
		suite.devBuild = true
	case "kustomize":
		if err := deployKustomize(); err != nil {
			return 0, err
		}
	}
	if s.deploy != "none" {
		fmt.Printf("e2e: deployed with %s in %v\n", s.deploy, time.Since(began).Round(100*time.Millisecond))
	}
	return m.Run(), nil
}

func readSettings() (settings, error) {
	s := settings{faults: os.Getenv("E2E_FAULTS") != "0", rate: 60, baseImage: os.Getenv("E2E_BASE_IMAGE")}
	s.skipGrafana = os.Getenv("E2E_SKIP_GRAFANA") == "1"
	if tilt, err := exec.LookPath("tilt"); err == nil {
		s.tilt = tilt
	}
	s.deploy = os.Getenv("E2E_DEPLOY")
	switch s.deploy {
	case "":
		s.deploy = "kustomize"
		if s.tilt != "" {
			s.deploy = "tilt"
		}
	case "tilt":
		if s.tilt == "" {
			return s, fmt.Errorf("E2E_DEPLOY=tilt: no tilt on PATH")
		}
	case "kustomize", "none":
	default:
		return s, fmt.Errorf("E2E_DEPLOY=%q: use tilt, kustomize or none", s.deploy)
	}
	if v := os.Getenv("E2E_NAMESPACE"); v != "" {
		namespace = v
	}
	if v := os.Getenv("E2E_RATE"); v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r < 1 {
			return s, fmt.Errorf("E2E_RATE=%q: not a positive whole number of calls per second", v)
		}
		s.rate = r
	}
	return s, nil
}

// deployKustomize builds both program images for the nodes' architecture,
// pushes them to the registry the cluster advertises (KEP-1755) and applies
// infra/base with those images, server-side.
func deployKustomize() error {
	ctx := context.Background()
	c := suite.c
	registry, err := localRegistry(ctx)
	if err != nil {
		return err
	}
	arch, err := nodeArch(ctx)
	if err != nil {
		return err
	}
	tag := "e2e-" + time.Now().UTC().Format("20060102150405")
	images := map[string]string{}
	for _, p := range []string{"server", "client"} {
		ref := fmt.Sprintf("%s/echo-%s:%s", registry, p, tag)
		build := []string{"docker", "build", "-q", "-f", "services/Dockerfile", "--build-arg", "PROGRAM=" + p, "-t", ref}
		if suite.baseImage != "" {
			build = append(build, "--build-arg", "BASE_IMAGE="+suite.baseImage)
		}
		for _, argv := range [][]string{{"scripts/build", p}, append(build, "."), {"docker", "push", "-q", ref}} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = suite.root
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
			}
		}
		images["echo-"+p] = ref
		fmt.Printf("e2e: pushed %s (linux/%s)\n", ref, arch)
	}
	objs, err := renderBase(images)
	if err != nil {
		return err
	}
	// A server-side apply keeps the fields another manager set: over what
	// Tilt deployed (debug mode's command, say), infra/base would not be
	// what runs.
	tilts, err := c.client.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=tilt"})
	if err != nil {
		return err
	}
	if len(tilts.Items) > 0 {
		return fmt.Errorf("E2E_DEPLOY=kustomize: deployment/%s in %s was deployed by Tilt, whose fields a server-side apply would keep: run tilt down (or delete the namespace) first", tilts.Items[0].Name, namespace)
	}
	var deployments []string
	for _, o := range objs {
		if suite.skipGrafana && o.GetLabels()["app"] == "grafana" {
			continue
		}
		if err := c.apply(ctx, o, false); err != nil {
			return err
		}
		if o.GetKind() == "Deployment" {
			deployments = append(deployments, o.GetName())
		}
	}
	if suite.skipGrafana {
		fmt.Println("e2e: Grafana left out (E2E_SKIP_GRAFANA=1): its checks are skipped")
	}
	for _, d := range deployments {
		if err := c.waitRollout(ctx, d, 3*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// localRegistry reads the registry the cluster advertises in the
// kube-public/local-registry-hosting ConfigMap.
func localRegistry(ctx context.Context) (string, error) {
	cm, err := suite.c.client.CoreV1().ConfigMaps("kube-public").Get(ctx, "local-registry-hosting", metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("the cluster advertises no registry (ConfigMap kube-public/local-registry-hosting): %w", err)
	}
	var hosting struct {
		Host string `json:"host"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["localRegistryHosting.v1"]), &hosting); err != nil || hosting.Host == "" {
		return "", fmt.Errorf("local-registry-hosting: no host in %q (%v)", cm.Data["localRegistryHosting.v1"], err)
	}
	return hosting.Host, nil
}

// renderBase builds infra/base with the images given (name -> reference),
// through an overlay written under build/e2e.
func renderBase(images map[string]string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(suite.root, "build", "e2e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// What `kustomize edit set namespace` and `kustomize edit set image`
	// write: the image's name and tag apart, as infra/base sets a tag.
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: %s\nresources:\n  - ../../infra/base\nimages:\n", namespace)
	for name, ref := range images {
		i := strings.LastIndex(ref, ":")
		k += fmt.Sprintf("  - name: %s\n    newName: %s\n    newTag: %s\n", name, ref[:i], ref[i+1:])
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return nil, err
	}
	return kustomizeBuild(dir)
}

// kustomizeBuild renders the kustomization in dir.
func kustomizeBuild(dir string) ([]*unstructured.Unstructured, error) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// nodeArch is the architecture of the cluster's (first) node, that images
// are built for.
func nodeArch(ctx context.Context) (string, error) {
	nodes, err := suite.c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return "", fmt.Errorf("list nodes: %v", err)
	}
	return nodes.Items[0].Status.NodeInfo.Architecture, nil
}
