package infra

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// RestrictedViolations returns why the restricted Pod Security Standard, in
// its newest version, refuses a pod with this metadata and spec: nothing when
// it is allowed. It runs the evaluator of the API server's admission.
func RestrictedViolations(meta *metav1.ObjectMeta, spec *corev1.PodSpec) ([]string, error) {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("pod security evaluator: %w", err)
	}
	var out []string
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	for _, r := range e.EvaluatePod(lv, meta, spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return out, nil
}

// ReadOnlyRootViolations returns the containers of spec whose root filesystem
// is writable, except those named in writable. The restricted standard does
// not ask for a read-only root; this project does, outside the Tilt dev build.
func ReadOnlyRootViolations(spec *corev1.PodSpec, writable ...string) []string {
	var out []string
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if s := c.SecurityContext; s != nil && s.ReadOnlyRootFilesystem != nil && *s.ReadOnlyRootFilesystem {
			continue
		}
		if !slices.Contains(writable, c.Name) {
			out = append(out, fmt.Sprintf("container %q: readOnlyRootFilesystem is not true", c.Name))
		}
	}
	return out
}
