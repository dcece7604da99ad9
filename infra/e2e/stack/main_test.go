//go:build e2e

package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"example.com/grpc-metrics/infra/e2e/framework"
	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
)

// suite is what TestMain set up for the tests: the settings, the cluster
// and the Tilt harness.
var suite *framework.Run

// namespace is the namespace of the environment under test: echo, or
// E2E_NAMESPACE (the Tiltfile's --namespace).
var namespace string

// devBuild: the stack is Tilt's dev build, whose app containers' root
// filesystem is writable.
var devBuild bool

// TestMain deploys the stack once, for every test of the package: `tilt ci`
// when Tilt is installed, else the images built and pushed to the registry
// the cluster advertises and infra/base applied; E2E_DEPLOY=none checks
// what already runs.
func TestMain(m *testing.M) {
	suite = framework.Main(filepath.Join("..", "..", ".."))
	namespace = suite.Namespace
	if !framework.Listing() {
		if err := deploy(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// deploy brings the stack up as E2E_DEPLOY says.
func deploy() error {
	s := suite.Settings
	began := time.Now()
	switch s.Deploy {
	case "tilt":
		// Two server pods, as in infra/base: the faults need a second one.
		if err := suite.Harness.CI(tiltsession.DefaultTarget(namespace), 2, s.Rate); err != nil {
			return err
		}
		devBuild = true
	case "kustomize":
		if err := deployKustomize(); err != nil {
			return err
		}
	}
	if s.Deploy != "none" {
		fmt.Printf("e2e: deployed with %s in %v\n", s.Deploy, time.Since(began).Round(100*time.Millisecond))
	}
	return nil
}

// deployKustomize builds both program images for the nodes' architecture,
// pushes them to the registry the cluster advertises (KEP-1755) and applies
// infra/base with those images, server-side.
func deployKustomize() error {
	ctx := context.Background()
	c := suite.Cluster
	registry, err := suite.Cluster.LocalRegistry(ctx)
	if err != nil {
		return err
	}
	arch, err := suite.Cluster.NodeArch(ctx)
	if err != nil {
		return err
	}
	tag := "e2e-" + time.Now().UTC().Format("20060102150405")
	images := map[string]string{}
	for _, p := range []string{"server", "client"} {
		ref := fmt.Sprintf("%s/echo-%s:%s", registry, p, tag)
		build := []string{"docker", "build", "-q", "-f", "services/Dockerfile", "--build-arg", "PROGRAM=" + p, "-t", ref}
		if suite.BaseImage != "" {
			build = append(build, "--build-arg", "BASE_IMAGE="+suite.BaseImage)
		}
		for _, argv := range [][]string{{"scripts/build", p}, append(build, "."), {"docker", "push", "-q", ref}} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = suite.Root
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
	tilts, err := c.Client.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=tilt"})
	if err != nil {
		return err
	}
	if len(tilts.Items) > 0 {
		return fmt.Errorf("E2E_DEPLOY=kustomize: deployment/%s in %s was deployed by Tilt, whose fields a server-side apply would keep: run tilt down (or delete the namespace) first", tilts.Items[0].Name, namespace)
	}
	var deployments []string
	for _, o := range objs {
		if suite.SkipGrafana && o.GetLabels()["app"] == "grafana" {
			continue
		}
		if err := c.Apply(ctx, o, false); err != nil {
			return err
		}
		if o.GetKind() == "Deployment" {
			deployments = append(deployments, o.GetName())
		}
	}
	if suite.SkipGrafana {
		fmt.Println("e2e: Grafana left out (E2E_SKIP_GRAFANA=1): its checks are skipped")
	}
	for _, d := range deployments {
		if err := c.WaitRollout(ctx, namespace, d, 3*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// renderBase builds infra/base with the images given (name -> reference),
// through an overlay written under build/e2e.
func renderBase(images map[string]string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(suite.Root, "build", "e2e")
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

// ensureClientRate sets the client's rate and concurrency for the faults,
// and waits for the rollout when that changed anything.
func ensureClientRate(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	want := map[string]string{"CLIENT_RATE": strconv.Itoa(suite.Rate), "CLIENT_CONCURRENCY": "4"}
	d, err := suite.Cluster.Client.AppsV1().Deployments(namespace).Get(ctx, "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cont := d.Spec.Template.Spec.Containers[0]
	var env []corev1.EnvVar
	for k, v := range want {
		found := false
		for _, e := range cont.Env {
			found = found || (e.Name == k && e.Value == v)
		}
		if !found {
			env = append(env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	if len(env) == 0 {
		return
	}
	patchJSON, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]any{{"name": cont.Name, "env": env}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := suite.Cluster.Client.AppsV1().Deployments(namespace).Patch(ctx, "client", types.StrategicMergePatchType, patchJSON, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := suite.Cluster.WaitRollout(ctx, namespace, "client", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}
