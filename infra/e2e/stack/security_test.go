//go:build e2e

package stack

import (
	"fmt"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/e2e/framework/kube"
)

// access is one question to the API server's authorizer: may the service
// account sa of the echo namespace do verb on resource (in ns, or across the
// cluster when ns is empty)?
type access struct {
	sa, verb, group, resource, ns string
	want                          bool
}

func (a access) String() string {
	where := "cluster-wide"
	if a.ns != "" {
		where = "in " + a.ns
	}
	return fmt.Sprintf("%s %s %s %s", a.sa, a.verb, a.resource, where)
}

// TestLeastPrivilege asks the authorizer (SubjectAccessReview) what each
// service account may do: Prometheus only reads what its discovery needs in
// its own namespace, the client only lists and watches EndpointSlices there;
// the server, Jaeger and Grafana have no API rights at all.
func TestLeastPrivilege(t *testing.T) {
	var cases []access
	discovery := []struct{ group, resource string }{{"discovery.k8s.io", "endpointslices"}, {"", "services"}, {"", "pods"}}
	for _, r := range discovery {
		for _, v := range []string{"get", "list", "watch"} {
			cases = append(cases, access{"prometheus", v, r.group, r.resource, namespace, true})
		}
		for _, v := range []string{"create", "update", "patch", "delete"} {
			cases = append(cases, access{"prometheus", v, r.group, r.resource, namespace, false})
		}
	}
	cases = append(cases,
		access{"prometheus", "get", "", "secrets", namespace, false},
		access{"prometheus", "get", "", "configmaps", namespace, false},
		access{"prometheus", "get", "", "nodes", "", false},
		access{"prometheus", "list", "", "pods", "kube-system", false},
		access{"prometheus", "list", "", "pods", "default", false},
	)
	// The client's resolver lists and watches the EndpointSlices of its own
	// namespace, and nothing else.
	for _, v := range []string{"list", "watch"} {
		cases = append(cases, access{"client", v, "discovery.k8s.io", "endpointslices", namespace, true})
		cases = append(cases, access{"client", v, "discovery.k8s.io", "endpointslices", "kube-system", false})
	}
	for _, v := range []string{"get", "create", "update", "patch", "delete"} {
		cases = append(cases, access{"client", v, "discovery.k8s.io", "endpointslices", namespace, false})
	}
	for _, sa := range []string{"server", "client", "jaeger", "grafana"} {
		for _, r := range append(discovery, struct{ group, resource string }{"", "secrets"}, struct{ group, resource string }{"", "configmaps"}) {
			for _, v := range []string{"get", "list"} {
				if sa == "client" && r.resource == "endpointslices" {
					continue // above
				}
				cases = append(cases, access{sa, v, r.group, r.resource, namespace, false})
			}
		}
	}
	for _, a := range cases {
		review := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + namespace + ":" + a.sa,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource,
			},
		}}
		got, err := suite.Cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if got.Status.Allowed != a.want {
			t.Errorf("%s: allowed %v, want %v (%s)", a, got.Status.Allowed, a.want, got.Status.Reason)
		}
	}
	t.Logf("%d authorization reviews", len(cases))
}

// TestPodSecurity checks what the cluster enforces: the namespace refuses a
// privileged pod at admission, every running pod passes the restricted
// standard and keeps a read-only root (but for Tilt's live-updated
// containers), and the programs run as a non-root user that cannot write
// their image.
func TestPodSecurity(t *testing.T) {
	ctx := t.Context()
	ns, err := suite.Cluster.Client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace %s enforces %q, want restricted", namespace, got)
	}

	privileged := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-privileged"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "e2e-not-pulled", SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
		}}},
	}
	_, err = suite.Cluster.Client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil {
		t.Error("a privileged pod was admitted (server-side dry run)")
	} else if !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
		t.Errorf("privileged pod refused for another reason: %v", err)
	}

	pods, err := suite.Cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var writable []string
	if devBuild {
		writable = []string{"server", "client"}
	}
	running := 0
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		running++
		for _, r := range append(kube.RestrictedViolations(t, p), infra.ReadOnlyRootViolations(&p.Spec, writable...)...) {
			t.Errorf("pod %s: %s", p.Name, r)
		}
	}
	if running == 0 {
		t.Fatal("no running pod in the namespace")
	}

	for _, app := range []string{"server", "client"} {
		for _, p := range suite.Cluster.MustPods(t, namespace, app, false, 0) {
			out, stderr, err := suite.Cluster.Exec(ctx, namespace, p.Name, nil, "id", "-u")
			if err != nil {
				t.Errorf("pod %s: id -u: %v %s", p.Name, err, stderr)
				continue
			}
			if uid := strings.TrimSpace(out); uid == "0" || uid == "" {
				t.Errorf("pod %s: the program runs as uid %q", p.Name, uid)
			}
			if devBuild {
				continue
			}
			if _, _, err := suite.Cluster.Exec(ctx, namespace, p.Name, nil, "touch", "/app/e2e-write-test"); err == nil {
				t.Errorf("pod %s: /app is writable", p.Name)
			}
		}
	}
	t.Logf("%d running pods checked against the restricted standard", running)
}
