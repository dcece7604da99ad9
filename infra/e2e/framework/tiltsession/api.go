package tiltsession

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
)

// BuildRecord is one entry of a Tilt resource's build history.
type BuildRecord struct {
	Start  time.Time `json:"startTime"`
	Finish time.Time `json:"finishTime"`
	Error  string    `json:"error"`
}

// Resource is the part of a Tilt UIResource these checks read.
type Resource struct {
	Status struct {
		BuildHistory []BuildRecord `json:"buildHistory"`
		UpdateStatus string        `json:"updateStatus"`
		CurrentBuild struct {
			StartTime string `json:"startTime"`
		} `json:"currentBuild"`
		PendingBuildSince string `json:"pendingBuildSince"`
	} `json:"status"`
}

// Idle reports whether the resource builds nothing and has nothing to build.
func (r Resource) Idle() bool {
	return r.Status.CurrentBuild.StartTime == "" && r.Status.PendingBuildSince == ""
}

// Settle waits until the resources named build nothing, for a second in a
// row: after a change of options, Tilt may build an image from the binary
// the previous options compiled, then live-update the new one.
func (s *Session) Settle(t testing.TB, names ...string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	quietSince := time.Now()
	for time.Since(quietSince) < time.Second {
		for _, n := range names {
			// One the new options bring may not exist yet.
			out, err := s.h.Command(s.Dir, s.Target.Env(), "get", "uiresource", n, "-o", "json", "--port", fmt.Sprint(s.Target.Port))
			var r Resource
			if err != nil || json.Unmarshal([]byte(out), &r) != nil || !r.Idle() {
				quietSince = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still build after 3 minutes", names)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Resource returns the UIResource name of the session's Tilt.
func (s *Session) Resource(t testing.TB, name string) Resource {
	t.Helper()
	var r Resource
	if err := json.Unmarshal(s.Tilt(t, "get", "uiresource", name, "-o", "json"), &r); err != nil {
		t.Fatalf("tilt get uiresource %s: %v", name, err)
	}
	return r
}

// BuildAfter returns the newest build of resource name that started after
// since and has finished, if any.
func (s *Session) BuildAfter(t testing.TB, name string, since time.Time) (BuildRecord, bool) {
	t.Helper()
	return s.Resource(t, name).buildAfter(since)
}

// buildAfter returns the newest build that started after since and has
// finished, if any.
func (r Resource) buildAfter(since time.Time) (BuildRecord, bool) {
	for _, b := range r.Status.BuildHistory {
		if b.Start.After(since) && !b.Finish.IsZero() {
			return b, true
		}
	}
	return BuildRecord{}, false
}

// ClickButton clicks a button of the Tilt UI as the web UI does: it sets the
// time of the last click in the status of the UIButton, through the API
// server of the session's Tilt (its kubeconfig is in Tilt's own directory).
func (s *Session) ClickButton(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("TILT_DEV_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".tilt-dev")
	}
	apiServer := "tilt-default" // Tilt's name for the API server of the default port
	if s.Target.Port != 10350 {
		apiServer = fmt.Sprintf("tilt-%d", s.Target.Port)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: filepath.Join(dir, "config")},
		&clientcmd.ConfigOverrides{CurrentContext: apiServer}).ClientConfig()
	if err != nil {
		t.Fatalf("Tilt's API server: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	buttons := dyn.Resource(schema.GroupVersionResource{Group: "tilt.dev", Version: "v1alpha1", Resource: "uibuttons"})
	b, err := buttons.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("button %s: %v", name, err)
	}
	if err := unstructured.SetNestedField(b.Object, metav1.NowMicro().UTC().Format("2006-01-02T15:04:05.000000Z07:00"), "status", "lastClickedAt"); err != nil {
		t.Fatal(err)
	}
	if _, err := buttons.UpdateStatus(t.Context(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("click %s: %v", name, err)
	}
}
