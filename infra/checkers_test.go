package infra

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The checkers the tree tests rely on, given known-bad input: a checker that
// passes everything would turn its rule off unseen.

func TestReadOnlyRootViolations(t *testing.T) {
	yes, no := true, false
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init"}},
		Containers: []corev1.Container{
			{Name: "ro", SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes}},
			{Name: "rw", SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &no}},
			{Name: "dev", SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &no}},
		},
	}
	got := ReadOnlyRootViolations(spec, "dev")
	want := []string{`container "init": readOnlyRootFilesystem is not true`, `container "rw": readOnlyRootFilesystem is not true`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ReadOnlyRootViolations = %q, want %q (an unset one and a false one; not the allowed dev)", got, want)
	}
}

func TestRestrictedViolations(t *testing.T) {
	got, err := RestrictedViolations(&metav1.ObjectMeta{Name: "p"}, &corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"allowPrivilegeEscalation != false", "runAsNonRoot != true", "seccompProfile"} {
		if !strings.Contains(strings.Join(got, "\n"), reason) {
			t.Errorf("a bare pod's violations %q do not name %q", got, reason)
		}
	}
}

func TestBuildIsStrict(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", "resources:\n  - sa.yaml\n")
	write("sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\nautomountServiceAccountTokn: false\n")
	if _, err := Build(dir); err == nil || !strings.Contains(err.Error(), "automountServiceAccountTokn") {
		t.Errorf("Build of a ServiceAccount with a misspelt field: %v, want an error naming the field", err)
	}
	write("sa.yaml", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\nautomountServiceAccountToken: false\n")
	if _, err := Build(dir); err != nil {
		t.Errorf("Build of the same ServiceAccount spelt right: %v", err)
	}
}
