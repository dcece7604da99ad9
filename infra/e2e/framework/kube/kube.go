// Package kube is the cluster of the current kube context as the checks of
// infra/e2e use it: pods found and waited for, port-forwards that outlive
// the restarts of a pod's processes, objects applied server-side, commands
// run in a container, and the API server stopped and resumed.
package kube

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"example.com/grpc-metrics/infra"
	"example.com/grpc-metrics/infra/proctest"
)

// Cluster is the Cluster of the current kube context.
type Cluster struct {
	Context string
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper // kinds to resources, discovered once
}

// Connect loads the current kube context (KUBECONFIG or ~/.kube/config).
func Connect() (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("no cluster answers on kube context %q: %v", raw.CurrentContext, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	return &Cluster{Context: raw.CurrentContext, Config: cfg, Client: cs, Dynamic: dyn, mapper: mapper}, nil
}

// RunningPods returns the pods of app in namespace ns that run and are
// not being deleted, sorted by name.
func (c *Cluster) RunningPods(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// MustPods returns the running pods of app in ns, sorted by name, only the
// ready ones if ready; it fails the test when there is none, or with
// want > 0 when there are not want.
func (c *Cluster) MustPods(t testing.TB, ns, app string, ready bool, want int) []corev1.Pod {
	t.Helper()
	pods, err := c.RunningPods(t.Context(), ns, app)
	what := "running"
	if ready {
		what, pods = "ready", slices.DeleteFunc(pods, func(p corev1.Pod) bool { return !PodReady(&p) })
	}
	switch {
	case err != nil:
		t.Fatalf("list the %s pods in %s: %v", app, ns, err)
	case len(pods) == 0:
		t.Fatalf("no %s %s pod in %s (not deployed, scaled to 0, or still starting)", what, app, ns)
	case want > 0 && len(pods) != want:
		t.Fatalf("want %d %s %s pods in %s, have %d", want, what, app, ns, len(pods))
	}
	return pods
}

// FollowLog streams the log of pod ns/pod from now on and hands each line to
// line, until the test ends.
func (c *Cluster) FollowLog(t testing.TB, ns, pod string, line func([]byte)) {
	t.Helper()
	now := metav1.Now()
	stream, err := c.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true, SinceTime: &now}).Stream(t.Context())
	if err != nil {
		t.Fatalf("follow the log of %s: %v", pod, err)
	}
	t.Cleanup(func() { stream.Close() })
	go func() {
		sc := bufio.NewScanner(stream)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line(sc.Bytes())
		}
	}()
}

// PodStates maps each pod of namespace ns that selector selects ("" for
// all) to what state says of it and of its containers' restarts; it fails
// the test when there is none.
func (c *Cluster) PodStates(t *testing.T, ns, selector string, state func(p corev1.Pod, restarts int32) string) map[string]string {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, p := range pods.Items {
		var restarts int32
		for _, c := range p.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		states[p.Name] = state(p, restarts)
	}
	if len(states) == 0 {
		t.Fatalf("no pods in %s", ns)
	}
	return states
}

func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitRollout waits until deployment ns/name has rolled out completely:
// every replica updated and available, and no pod of an older revision left.
func (c *Cluster) WaitRollout(ctx context.Context, ns, name string, timeout time.Duration) error {
	return Poll(ctx, timeout, fmt.Sprintf("deployment/%s in %s rolled out", name, ns), func(ctx context.Context) (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if state := rolloutState(d); state != "" {
			return false, state
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
		if err != nil {
			return false, err.Error()
		}
		return int32(len(pods.Items)) == d.Status.Replicas, "old pods still terminating"
	})
}

// WaitPodReady waits until pod ns/name is ready.
func (c *Cluster) WaitPodReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	return Poll(ctx, timeout, fmt.Sprintf("pod %s/%s ready", ns, name), func(ctx context.Context) (bool, string) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return PodReady(p), "not ready"
	})
}

// WaitPodGone waits until pod ns/name no longer exists.
func (c *Cluster) WaitPodGone(ctx context.Context, ns, name string, timeout time.Duration) error {
	return Poll(ctx, timeout, fmt.Sprintf("pod %s/%s gone", ns, name), func(ctx context.Context) (bool, string) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, "still there"
	})
}

// Poll is proctest.Poll every half second: what the cluster checks wait for
// moves at the pace of the kubelet and the API server.
func Poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (done bool, why string)) error {
	return proctest.Poll(ctx, 500*time.Millisecond, timeout, what, cond)
}

// rolloutState says what a deployment's rollout still waits for, or "".
func rolloutState(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return "spec change not observed yet"
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("%d old replicas left", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < want:
		return fmt.Sprintf("%d of %d replicas available", s.AvailableReplicas, want)
	}
	return ""
}

// RestrictedViolations are the ways pod p breaks the restricted Pod Security
// standard.
func RestrictedViolations(t testing.TB, p corev1.Pod) []string {
	t.Helper()
	reasons, err := infra.RestrictedViolations(&p.ObjectMeta, &p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return reasons
}

// LocalRegistry reads the registry the cluster advertises in the
// kube-public/local-registry-hosting ConfigMap.
func (c *Cluster) LocalRegistry(ctx context.Context) (string, error) {
	cm, err := c.Client.CoreV1().ConfigMaps("kube-public").Get(ctx, "local-registry-hosting", metav1.GetOptions{})
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

// NodeArch is the architecture of the cluster's (first) node, that images
// are built for.
func (c *Cluster) NodeArch(ctx context.Context) (string, error) {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return "", fmt.Errorf("list nodes: %v", err)
	}
	return nodes.Items[0].Status.NodeInfo.Architecture, nil
}

// Scale sets the replicas of deployment ns/name and waits for the rollout.
func (c *Cluster) Scale(t testing.TB, ns, name string, n int32) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRollout(ctx, ns, name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}
