package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name, app string, phase corev1.PodPhase, ready bool, deleting bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "echo", Labels: map[string]string{"app": app}},
		Status:     corev1.PodStatus{Phase: phase},
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: status}}
	if deleting {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func TestRunningPodsAndMustPods(t *testing.T) {
	c := &Cluster{Client: fake.NewClientset(
		pod("server-b", "server", corev1.PodRunning, true, false),
		pod("server-a", "server", corev1.PodRunning, false, false),
		pod("server-c", "server", corev1.PodPending, false, false),
		pod("server-d", "server", corev1.PodRunning, true, true),
		pod("client-a", "client", corev1.PodRunning, true, false),
	)}
	pods, err := c.RunningPods(t.Context(), "echo", "server")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(pods); got != "server-a server-b" {
		t.Errorf("running server pods: %s, want server-a server-b (sorted; no pending, no deleted one)", got)
	}
	if got := names(c.MustPods(t, "echo", "server", true, 1)); got != "server-b" {
		t.Errorf("ready server pods: %s, want server-b", got)
	}
	if got := names(c.MustPods(t, "echo", "server", false, 2)); got != "server-a server-b" {
		t.Errorf("running server pods: %s", got)
	}
}

func names(pods []corev1.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, p.Name)
	}
	return strings.Join(s, " ")
}

func TestPodReady(t *testing.T) {
	if !PodReady(pod("a", "server", corev1.PodRunning, true, false)) {
		t.Error("a pod whose Ready condition is True is not ready")
	}
	if PodReady(pod("a", "server", corev1.PodRunning, false, false)) {
		t.Error("a pod whose Ready condition is False is ready")
	}
	if PodReady(&corev1.Pod{}) {
		t.Error("a pod with no conditions is ready")
	}
}

func deployment(replicas int32, s appsv1.DeploymentStatus, generation int64) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "server", Namespace: "echo", Generation: generation},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}}},
		Status: s,
	}
}

func TestRolloutState(t *testing.T) {
	for _, c := range []struct {
		d    *appsv1.Deployment
		want string
	}{
		{deployment(2, appsv1.DeploymentStatus{ObservedGeneration: 1}, 2), "spec change not observed yet"},
		{deployment(2, appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 1, Replicas: 3}, 2), "1 of 2 replicas updated"},
		{deployment(2, appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 2, Replicas: 3}, 2), "1 old replicas left"},
		{deployment(2, appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 2, Replicas: 2, AvailableReplicas: 1}, 2), "1 of 2 replicas available"},
		{deployment(2, appsv1.DeploymentStatus{ObservedGeneration: 2, UpdatedReplicas: 2, Replicas: 2, AvailableReplicas: 2}, 2), ""},
	} {
		if got := rolloutState(c.d); got != c.want {
			t.Errorf("rolloutState(%+v) = %q, want %q", c.d.Status, got, c.want)
		}
	}
}

func TestWaitRollout(t *testing.T) {
	done := deployment(1, appsv1.DeploymentStatus{ObservedGeneration: 1, UpdatedReplicas: 1, Replicas: 1, AvailableReplicas: 1}, 1)
	c := &Cluster{Client: fake.NewClientset(done, pod("server-a", "server", corev1.PodRunning, true, false))}
	if err := c.WaitRollout(t.Context(), "echo", "server", 5*time.Second); err != nil {
		t.Errorf("a rolled-out deployment: %v", err)
	}
	// An old pod still terminating: the rollout is not over.
	c = &Cluster{Client: fake.NewClientset(done, pod("server-a", "server", corev1.PodRunning, true, false),
		pod("server-old", "server", corev1.PodRunning, false, true))}
	err := c.WaitRollout(t.Context(), "echo", "server", time.Second)
	if err == nil || !strings.Contains(err.Error(), "old pods still terminating") {
		t.Errorf("an old pod left: %v, want an error saying old pods still terminate", err)
	}
	c = &Cluster{Client: fake.NewClientset()}
	if err := c.WaitRollout(t.Context(), "echo", "server", time.Second); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("no deployment: %v, want not found", err)
	}
}

func TestWaitPod(t *testing.T) {
	c := &Cluster{Client: fake.NewClientset(pod("server-a", "server", corev1.PodRunning, false, false))}
	ctx := t.Context()
	go func() {
		time.Sleep(600 * time.Millisecond)
		c.Client.CoreV1().Pods("echo").UpdateStatus(context.Background(), pod("server-a", "server", corev1.PodRunning, true, false), metav1.UpdateOptions{})
	}()
	if err := c.WaitPodReady(ctx, "echo", "server-a", 10*time.Second); err != nil {
		t.Errorf("a pod made ready: %v", err)
	}
	if err := c.WaitPodGone(ctx, "echo", "server-a", time.Second); err == nil || !strings.Contains(err.Error(), "still there") {
		t.Errorf("a pod that stays: %v, want still there", err)
	}
	if err := c.Client.CoreV1().Pods("echo").Delete(ctx, "server-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPodGone(ctx, "echo", "server-a", 5*time.Second); err != nil {
		t.Errorf("a deleted pod: %v", err)
	}
}
