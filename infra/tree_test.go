package infra_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra"
)

// deployed are the trees that deploy: `kubectl apply -k infra`, the Tilt dev
// build and the one for a cluster with the Prometheus Operator.
var deployed = []string{".", "dev", "operator"}

// programs are the project's own, in every tree.
var programs = []string{"server", "client"}

// built holds each tree built so far: every tree is rendered once per run.
// Tests read the trees; one that changes an object changes a copy.
var built = map[string]*infra.Tree{}

func mustBuild(t *testing.T, dir string) *infra.Tree {
	t.Helper()
	if tr, ok := built[dir]; ok {
		return tr
	}
	tr, err := infra.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	built[dir] = tr
	return tr
}

// eachTree runs f on every tree that deploys, a subtest each.
func eachTree(t *testing.T, f func(t *testing.T, dir string, tr *infra.Tree)) {
	for _, dir := range deployed {
		t.Run(dir, func(t *testing.T) { f(t, dir, mustBuild(t, dir)) })
	}
}

// namespaceOf is the name of the one namespace of tr.
func namespaceOf(t *testing.T, tr *infra.Tree) string {
	t.Helper()
	if len(tr.Namespaces) != 1 {
		t.Fatalf("%d namespaces, want exactly one", len(tr.Namespaces))
	}
	return slices.Collect(maps.Keys(tr.Namespaces))[0]
}

func container(t *testing.T, tr *infra.Tree, deployment string) *corev1.Container {
	t.Helper()
	d := tr.Deployments[deployment]
	if d == nil {
		t.Fatalf("deployment %q is missing", deployment)
	}
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("deployment %q has %d containers, want 1", deployment, n)
	}
	return &d.Spec.Template.Spec.Containers[0]
}

// hasPort reports whether port (a name or a number) is one of ports.
func hasPort(ports []corev1.ContainerPort, port intstr.IntOrString) bool {
	return slices.ContainsFunc(ports, func(cp corev1.ContainerPort) bool {
		return (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal)
	})
}

// defaults holds each program's defaults once read.
var defaults = map[string]map[string]string{}

// settings returns what program, running in container c, reads from each of
// its PROGRAM_* variables: the container's value, or the program's default
// where the manifest leaves the variable unset. The defaults are the
// envconfig tags of its sources and of the platform package it embeds (a
// nested struct's own key stands for itself, never a variable read).
func settings(t *testing.T, program string, c *corev1.Container) map[string]string {
	t.Helper()
	prefix := strings.ToUpper(program) + "_"
	if defaults[program] == nil {
		defaults[program] = map[string]string{}
		files, err := filepath.Glob(filepath.Join("..", "services", program, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		platform, _ := filepath.Glob(filepath.Join("..", "services", "internal", "platform", "*.go"))
		for _, file := range append(files, platform...) {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if field, ok := n.(*ast.Field); ok && field.Tag != nil {
					tag, _ := strconv.Unquote(field.Tag.Value)
					if key := reflect.StructTag(tag).Get("envconfig"); key != "" {
						defaults[program][prefix+key] = reflect.StructTag(tag).Get("default")
					}
				}
				return true
			})
		}
		if len(defaults[program]) == 0 {
			t.Fatalf("services/%s: no envconfig variable found", program)
		}
	}
	out := maps.Clone(defaults[program])
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, prefix) && e.ValueFrom == nil {
			out[e.Name] = e.Value
		}
	}
	return out
}

func TestTreesBuildAndDecodeStrictly(t *testing.T) {
	app := mustBuild(t, "app")
	for _, dir := range []string{".", "base", "dev", "app", "operator"} {
		t.Run(dir, func(t *testing.T) {
			tr := mustBuild(t, dir)
			ns := namespaceOf(t, tr)
			for id, data := range tr.Raw {
				if id == "namespace/"+ns {
					continue
				}
				var meta struct {
					Metadata struct {
						Namespace string            `json:"namespace"`
						Labels    map[string]string `json:"labels"`
					} `json:"metadata"`
				}
				if err := yaml.Unmarshal(data, &meta); err != nil {
					t.Fatalf("%s: %v", id, err)
				}
				if meta.Metadata.Namespace != ns {
					t.Errorf("%s: namespace %q, want the tree's %q", id, meta.Metadata.Namespace, ns)
				}
				// The Tiltfile selects the observability objects by this label.
				if meta.Metadata.Labels["app"] == "" {
					t.Errorf("%s: no app label", id)
				}
			}
			// Every tree deploys the app.
			for id := range app.Raw {
				if _, ok := tr.Raw[id]; !ok {
					t.Errorf("%s of infra/app is missing", id)
				}
			}
		})
	}
}

// TestTreesMoveToAnotherNamespace: the manifests name their namespace only
// in kustomize's namespace field, so an overlay that sets another one (what
// `kustomize edit set namespace` writes) moves everything, and leaves no
// reference to the old one in a name, a subject or a configuration.
func TestTreesMoveToAnotherNamespace(t *testing.T) {
	for _, dir := range []string{"base", "operator"} {
		old := namespaceOf(t, mustBuild(t, dir))
		abs, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		overlay := t.TempDir()
		rel, err := filepath.Rel(overlay, abs) // kustomize takes no absolute resource path
		if err != nil {
			t.Fatal(err)
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: elsewhere\nresources:\n  - " + rel + "\n"
		if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
		tr, err := infra.Build(overlay)
		if err != nil {
			t.Fatalf("%s moved to namespace elsewhere: %v", dir, err)
		}
		if ns := namespaceOf(t, tr); ns != "elsewhere" {
			t.Errorf("%s: namespace %s, want the one namespace renamed to elsewhere", dir, ns)
		}
		for _, rb := range tr.RoleBindings {
			for _, s := range rb.Subjects {
				if s.Kind == "ServiceAccount" && s.Namespace != "elsewhere" {
					t.Errorf("%s: rolebinding/%s names service account %s in namespace %q", dir, rb.Name, s.Name, s.Namespace)
				}
			}
		}
		for id, data := range tr.Raw {
			for _, ref := range []string{"namespace: " + old + "\n", "." + old + ".svc", "- " + old + "\n"} {
				if strings.Contains(string(data), ref) {
					t.Errorf("%s moved to namespace elsewhere: %s still has %q", dir, id, ref)
				}
			}
		}
	}
}
