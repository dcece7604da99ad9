//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"

	"example.com/grpc-metrics/infra/proctest"
)

// cluster is the cluster of the current kube context.
type cluster struct {
	context string
	config  *rest.Config
	client  kubernetes.Interface
	dynamic dynamic.Interface
	mapper  *restmapper.DeferredDiscoveryRESTMapper // kinds to resources, discovered once
}

// connect loads the current kube context (KUBECONFIG or ~/.kube/config).
func connect() (*cluster, error) {
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
	return &cluster{context: raw.CurrentContext, config: cfg, client: cs, dynamic: dyn, mapper: mapper}, nil
}

// runningPods returns the pods of app that run and are not being deleted,
// sorted by name.
func (c *cluster) runningPods(ctx context.Context, app string) ([]corev1.Pod, error) {
	return c.runningPodsIn(ctx, namespace, app)
}

// runningPodsIn is runningPods in namespace ns.
func (c *cluster) runningPodsIn(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	list, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
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

// mustPods returns the running pods of app in ns, sorted by name, only the
// ready ones if ready; it fails the test when there is none, or with
// want > 0 when there are not want.
func mustPods(t testing.TB, ns, app string, ready bool, want int) []corev1.Pod {
	t.Helper()
	pods, err := suite.c.runningPodsIn(t.Context(), ns, app)
	what := "running"
	if ready {
		what, pods = "ready", slices.DeleteFunc(pods, func(p corev1.Pod) bool { return !podReady(&p) })
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

// followLog streams the log of pod ns/pod from now on and hands each line to
// line, until the test ends.
func followLog(t testing.TB, ns, pod string, line func([]byte)) {
	t.Helper()
	now := metav1.Now()
	stream, err := suite.c.client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true, SinceTime: &now}).Stream(t.Context())
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

// podStates maps each pod of namespace ns that selector selects ("" for
// all) to what state says of it and of its containers' restarts; it fails
// the test when there is none.
func podStates(t *testing.T, ns, selector string, state func(p corev1.Pod, restarts int32) string) map[string]string {
	t.Helper()
	pods, err := suite.c.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
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

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitRollout waits until deployment name has rolled out completely: every
// replica updated and available, and no pod of an older revision left.
func (c *cluster) waitRollout(ctx context.Context, name string, timeout time.Duration) error {
	return c.waitRolloutIn(ctx, namespace, name, timeout)
}

// waitRolloutIn is waitRollout in namespace ns.
func (c *cluster) waitRolloutIn(ctx context.Context, ns, name string, timeout time.Duration) error {
	return poll(ctx, timeout, fmt.Sprintf("deployment/%s in %s rolled out", name, ns), func(ctx context.Context) (bool, string) {
		d, err := c.client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if state := rolloutState(d); state != "" {
			return false, state
		}
		pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(d.Spec.Selector)})
		if err != nil {
			return false, err.Error()
		}
		return int32(len(pods.Items)) == d.Status.Replicas, "old pods still terminating"
	})
}

// waitPodReady waits until pod ns/name is ready.
func (c *cluster) waitPodReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	return poll(ctx, timeout, fmt.Sprintf("pod %s/%s ready", ns, name), func(ctx context.Context) (bool, string) {
		p, err := c.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return podReady(p), "not ready"
	})
}

// waitPodGone waits until pod ns/name no longer exists.
func (c *cluster) waitPodGone(ctx context.Context, ns, name string, timeout time.Duration) error {
	return poll(ctx, timeout, fmt.Sprintf("pod %s/%s gone", ns, name), func(ctx context.Context) (bool, string) {
		_, err := c.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, "still there"
	})
}

// poll is proctest.Poll every half second: what the cluster checks wait for
// moves at the pace of the kubelet and the API server.
func poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (done bool, why string)) error {
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

// forward is a port-forward to one port of a pod, through the API server,
// that outlives the restarts of the pod's processes: client-go, like kubectl,
// drops the whole forward when one connection finds the pod's port closed, so
// the forward starts again on the same local port.
type forward struct {
	addr string // the local host:port

	mu   sync.Mutex
	stop chan struct{} // of the current forwarder
	done bool
}

// portForward forwards a free loopback port to port of a pod of the echo
// namespace until the test ends, and returns the local address.
func (c *cluster) portForward(t testing.TB, pod string, port int) string {
	t.Helper()
	return c.portForwardIn(t, namespace, pod, port)
}

// portForwardIn is portForward to a pod of namespace ns.
func (c *cluster) portForwardIn(t testing.TB, ns, pod string, port int) string {
	t.Helper()
	f := &forward{}
	died, err := f.start(c, ns, pod, fmt.Sprintf("0:%d", port))
	if err != nil {
		t.Fatalf("port-forward to pod %s: %v", pod, err)
	}
	_, local, _ := net.SplitHostPort(f.addr)
	spec := local + ":" + strconv.Itoa(port)
	go func() {
		for {
			<-died
			for {
				f.mu.Lock()
				stopped := f.done
				f.mu.Unlock()
				if stopped {
					return
				}
				if died, err = f.start(c, ns, pod, spec); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(f.close)
	return f.addr
}

// start runs one forwarder for spec (LOCAL:REMOTE) and records the local
// address; the channel it returns is closed when that forwarder ends.
func (f *forward) start(c *cluster, ns, pod, spec string) (<-chan struct{}, error) {
	transport, upgrader, err := spdy.RoundTripperFor(c.config)
	if err != nil {
		return nil, err
	}
	url := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready, died := make(chan struct{}), make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{spec}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	failed := make(chan error, 1)
	go func() {
		failed <- pf.ForwardPorts()
		close(died)
	}()
	select {
	case <-ready:
	case err := <-failed:
		return nil, err
	case <-time.After(30 * time.Second):
		close(stop)
		return nil, fmt.Errorf("not ready within 30s")
	}
	fwd, err := pf.GetPorts()
	if err != nil {
		close(stop)
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		close(stop)
		return died, nil
	}
	f.stop = stop
	for _, p := range fwd {
		f.addr = fmt.Sprintf("127.0.0.1:%d", p.Local)
	}
	return died, nil
}

func (f *forward) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.done = true
		close(f.stop)
	}
}

// resource is the API of o's kind, in o's namespace if it has one. A kind
// whose CRD was installed since discovery is found by discovering again.
func (c *cluster) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	mapping, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		mapping, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
	}
	if o.GetNamespace() != "" {
		return c.dynamic.Resource(mapping.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.dynamic.Resource(mapping.Resource), nil
}

// apply applies o server-side, as kubectl apply --server-side does; with
// dryRun the API server validates and admits it without storing it.
func (c *cluster) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	r, err := c.resource(o)
	if err != nil {
		return err
	}
	data, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: "e2e", Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := r.Patch(ctx, o.GetName(), types.ApplyPatchType, data, opts); err != nil {
		return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
	}
	return nil
}

// deleteAll deletes objs, last first, and reports what it could not: the
// cleanup of a check that installed them (the test's context is over by
// then).
func (c *cluster) deleteAll(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	background := metav1.DeletePropagationBackground
	for _, o := range slices.Backward(objs) {
		r, err := c.resource(o)
		if err != nil {
			if !meta.IsNoMatchError(err) { // its CRD is gone, and it with it
				t.Errorf("delete %v", err)
			}
			continue
		}
		if err := r.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &background}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// create creates o as it is.
func (c *cluster) create(ctx context.Context, o *unstructured.Unstructured) error {
	r, err := c.resource(o)
	if err != nil {
		return err
	}
	if _, err := r.Create(ctx, o, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
	}
	return nil
}

// exec runs argv in the pod's first container with stdin (nil for none),
// the way Tilt's live update does (websocket, SPDY when the upgrade fails),
// and returns its output.
func (c *cluster) exec(ctx context.Context, pod string, stdin io.Reader, argv ...string) (stdout, stderr string, err error) {
	req := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: argv, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdyExec, err := remotecommand.NewSPDYExecutor(c.config, http.MethodPost, req.URL())
	if err != nil {
		return "", "", err
	}
	wsExec, err := remotecommand.NewWebSocketExecutor(c.config, http.MethodGet, req.URL().String())
	if err != nil {
		return "", "", err
	}
	ex, err := remotecommand.NewFallbackExecutor(wsExec, spdyExec, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}
