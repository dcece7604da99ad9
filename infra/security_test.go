package infra_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"example.com/grpc-metrics/infra"
)

// writable names, by tree, the containers whose root filesystem may be
// writable: the live-updated programs of the Tilt dev build, nothing else.
var writable = map[string][]string{"dev": programs}

// projectViolations lists why container c breaks the project's rules,
// beyond the restricted Pod Security Standard and the read-only root.
func projectViolations(c *corev1.Container) []string {
	var out []string
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if req, lim := c.Resources.Requests[name], c.Resources.Limits[name]; req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			out = append(out, fmt.Sprintf("container %s: %s request %s and limit %s: want both, the request no more than the limit", c.Name, name, req.String(), lim.String()))
		}
	}
	if _, tag, ok := strings.Cut(c.Image, ":"); !ok || tag == "" || tag == "latest" {
		out = append(out, fmt.Sprintf("container %s: image %q has no pinned tag", c.Name, c.Image))
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		out = append(out, fmt.Sprintf("container %s: readiness or liveness probe is missing", c.Name))
	}
	return out
}

// TestPodSecurity: in every tree that deploys, the dev build included, the
// namespace enforces the restricted Pod Security Standard and every pod
// template passes it (the API server's own evaluator), keeps its root
// filesystem read-only but where writable allows, and keeps the project's
// rules.
func TestPodSecurity(t *testing.T) {
	eachTree(t, func(t *testing.T, dir string, tr *infra.Tree) {
		ns := tr.Namespaces[namespaceOf(t, tr)]
		for _, mode := range []string{"enforce", "audit", "warn"} {
			if key := "pod-security.kubernetes.io/" + mode; ns.Labels[key] != "restricted" {
				t.Errorf("namespace label %s = %q, want restricted", key, ns.Labels[key])
			}
		}
		for name, d := range tr.Deployments {
			pod := &d.Spec.Template.Spec
			reasons, err := infra.RestrictedViolations(&d.Spec.Template.ObjectMeta, pod)
			if err != nil {
				t.Fatal(err)
			}
			reasons = append(reasons, infra.ReadOnlyRootViolations(pod, writable[dir]...)...)
			for _, c := range pod.Containers {
				if s := c.SecurityContext; slices.Contains(writable[dir], c.Name) && s != nil && s.ReadOnlyRootFilesystem != nil && *s.ReadOnlyRootFilesystem {
					reasons = append(reasons, fmt.Sprintf("container %q is live-updated, but its root filesystem is read-only: the new binary could not be copied in", c.Name))
				}
			}
			for _, c := range pod.Containers {
				reasons = append(reasons, projectViolations(&c)...)
			}
			for _, r := range reasons {
				t.Errorf("deployment/%s: %s", name, r)
			}
		}
	})
}

// TestRBAC: each program runs as its own service account; the only
// pods with a token are those whose account a Role is bound to, in their own
// namespace, and those Roles only read. What each may read the cluster's
// authorizer answers (TestLeastPrivilege in infra/e2e/stack).
func TestRBAC(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		ns := namespaceOf(t, tr)
		for id := range tr.Raw {
			if strings.HasPrefix(id, "clusterrole") {
				t.Errorf("%s: cluster-wide RBAC, want Roles in namespace %s only", id, ns)
			}
		}
		bound := map[string]bool{}
		for name, rb := range tr.RoleBindings {
			role := tr.Roles[rb.RoleRef.Name]
			if rb.RoleRef.Kind != "Role" || role == nil {
				t.Errorf("rolebinding/%s binds %s %s, not a Role of the tree", name, rb.RoleRef.Kind, rb.RoleRef.Name)
				continue
			}
			for _, r := range role.Rules {
				for _, v := range r.Verbs {
					if !slices.Contains([]string{"get", "list", "watch"}, v) {
						t.Errorf("role/%s may %s %v: only reading is granted", role.Name, v, r.Resources)
					}
				}
			}
			for _, sub := range rb.Subjects {
				if sub.Kind != "ServiceAccount" || sub.Namespace != ns || tr.ServiceAccounts[sub.Name] == nil {
					t.Errorf("rolebinding/%s: subject %+v is not a service account of the tree", name, sub)
				}
				bound[sub.Name] = true
			}
		}
		for name, d := range tr.Deployments {
			pod := d.Spec.Template.Spec
			sa := tr.ServiceAccounts[name]
			if pod.ServiceAccountName != name || sa == nil {
				t.Errorf("deployment/%s: service account %q, want its own account %q", name, pod.ServiceAccountName, name)
			} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("serviceaccount/%s: automountServiceAccountToken is not false: each pod says whether it needs one", name)
			}
			if got := pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken; got != bound[name] {
				t.Errorf("deployment/%s: automountServiceAccountToken = %v, but its account is bound to a Role: %v", name, got, bound[name])
			}
		}
	})
}

// TestDeployedTreesCarryNoDebugging: Delve and the pprof listener are Tilt's
// debug mode only (the Tiltfile's --debug). What deploys runs the programs
// themselves, with no debug listener; that a container declares no port its
// program does not listen on, a debugger's included, is
// TestProgramsListenWhereTheyAreReached's.
func TestDeployedTreesCarryNoDebugging(t *testing.T) {
	eachTree(t, func(t *testing.T, _ string, tr *infra.Tree) {
		for name, d := range tr.Deployments {
			for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
				for _, arg := range append(slices.Clone(c.Command), c.Args...) {
					if strings.Contains(arg, "dlv") {
						t.Errorf("deployment/%s container %s runs Delve (%q)", name, c.Name, arg)
					}
				}
				for _, e := range c.Env {
					if strings.HasSuffix(e.Name, "_DEBUG_PORT") {
						t.Errorf("deployment/%s container %s sets %s: its pprof listener is for Tilt's debug mode only", name, c.Name, e.Name)
					}
				}
			}
		}
	})
}
