//go:build e2e

package session

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/e2e/framework/tiltsession"
	"example.com/grpc-metrics/infra/proctest"
)

// The Tilt UI, as a person reads it: every link of every resource opens a
// page, through Tilt's forwards, and opening them costs no forward; the
// actions (the Tiltfile's action resources) end green or red, with the
// reason in their own log.

// wantLinks are the links each resource shows, by name. The Endpoints
// column of the Tilt UI cuts names after about 9 characters.
var wantLinks = map[string][]string{
	"server":     {"gRPC", "metrics"},
	"client":     {"metrics"},
	"prometheus": {"targets", "alerts"},
	"jaeger":     {"traces"},
	"grafana":    {"echo", "gRPC", "runtime"},
}

const maxLinkName = 9

// uiLink is one entry of a UIResource's endpointLinks.
type uiLink struct {
	URL  string `json:"url"`
	Name string `json:"name"`
}

// links returns the endpoint links of every resource of the session.
func (s *session) links(t testing.TB) map[string][]uiLink {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				EndpointLinks []uiLink `json:"endpointLinks"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(s.Tilt(t, "get", "uiresource", "-o", "json"), &list); err != nil {
		t.Fatalf("tilt get uiresource: %v", err)
	}
	links := map[string][]uiLink{}
	for _, r := range list.Items {
		if len(r.Status.EndpointLinks) > 0 {
			links[r.Metadata.Name] = r.Status.EndpointLinks
		}
	}
	return links
}

// TestTiltUI opens every link of every resource as a browser would, then
// calls the gRPC port through its forward; it runs the smoke action against
// the whole environment (green) and with the server scaled to 0 (red, naming
// the server), the bad-calls action (green after its minute, the refused
// calls in its own pane, in console lines) and the load-burst action
// (green, with ghz's summary in its log).
func TestTiltUI(t *testing.T) {
	if suite.SkipGrafana {
		// The smoke action runs scripts/smoke, which reads SMOKE_SKIP_GRAFANA.
		t.Setenv("SMOKE_SKIP_GRAFANA", "1")
	}
	s := startTilt(t, 1, suite.Rate)
	logFrom := len(s.Proc.Output())

	t.Run("links", func(t *testing.T) { s.openLinks(t, logFrom) })
	t.Run("smoke", s.smokeAction)
	t.Run("bad-calls", s.badCallsAction)
	t.Run("load-burst", s.loadBurstAction)
}

// openLinks opens every link of every resource as a browser would, then
// calls the gRPC and metrics ports through their forwards: Tilt's log from
// byte logFrom on tells of no lost forward.
func (s *session) openLinks(t *testing.T, logFrom int) {
	links := s.links(t)
	if got, want := slices.Sorted(maps.Keys(links)), slices.Sorted(maps.Keys(wantLinks)); !slices.Equal(got, want) {
		t.Errorf("resources with links: %v, want %v", got, want)
	}
	browser := http.Client{Timeout: 10 * time.Second}
	for resource, ls := range links {
		var names []string
		for _, l := range ls {
			names = append(names, l.Name)
			if n := len([]rune(l.Name)); n == 0 || n > maxLinkName {
				t.Errorf("%s: link %s named %q: want a name of 1 to %d characters, which the Endpoints column shows whole", resource, l.URL, l.Name, maxLinkName)
			}
			if resource == "grafana" && suite.SkipGrafana {
				t.Logf("%s %s (%s): not opened, E2E_SKIP_GRAFANA=1: the Grafana deployed may not serve dashboards", resource, l.Name, l.URL)
				continue
			}
			resp, err := browser.Get(l.URL)
			if err != nil {
				t.Errorf("%s: link %q: %v", resource, l.Name, err)
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resource == "prometheus" && resp.StatusCode == http.StatusInternalServerError && strings.Contains(string(body), "Error opening React index.html") {
				// A Prometheus built from its Go module alone, without the
				// web UI's assets: the forward works, the page cannot.
				t.Logf("%s %s (%s): NOT CHECKED, this Prometheus has no web UI (%s); its API through the same forward must answer", resource, l.Name, l.URL, strings.TrimSpace(string(body)))
				api := *resp.Request.URL
				api.Path, api.RawQuery = "/api/v1/targets", ""
				if err := proctest.GetOK(api.String()); err != nil {
					t.Errorf("%s: %v", resource, err)
				}
				continue
			}
			if err != nil || resp.StatusCode != http.StatusOK || len(body) == 0 {
				t.Errorf("%s: link %q (%s): %s, %d bytes (%v); want 200 and a page", resource, l.Name, l.URL, resp.Status, len(body), err)
			}
			if resource == "server" && l.Name == "gRPC" && !strings.Contains(string(body), "grpcurl -plaintext") {
				t.Errorf("server: the gRPC link's page does not say how to call it:\n%s", body)
			}
		}
		if !slices.Equal(names, wantLinks[resource]) {
			t.Errorf("%s: links %q, want %q", resource, names, wantLinks[resource])
		}
	}
	// What a person at a terminal does next: grpcurl through the forward.
	if err := proctest.CheckHealth(s.Target.Local(20000)); err != nil {
		t.Errorf("after every link was opened: %v", err)
	}
	if err := proctest.GetMetrics(s.Target.Local(9000)); err != nil {
		t.Errorf("after every link was opened: %v", err)
	}
	if errs := s.ForwardErrors(logFrom); len(errs) > 0 {
		t.Errorf("Tilt lost forwards while the links were opened:\n%s", strings.Join(errs, "\n"))
	}
}

// smokeAction runs the smoke action against the whole environment (green)
// and with the server scaled to 0 (red, naming the server).
func (s *session) smokeAction(t *testing.T) {
	if b := s.runAction(t, "smoke", 5*time.Minute); b.Error != "" {
		t.Fatalf("smoke against the whole environment: %s\n%s", b.Error, tiltsession.Tail(string(s.Tilt(t, "logs", "smoke"))))
	}
	suite.Cluster.Scale(t, namespace, "server", 0)
	defer suite.Cluster.Scale(t, namespace, "server", 1)
	b := s.runAction(t, "smoke", 5*time.Minute)
	log := string(s.Tilt(t, "logs", "smoke"))
	if b.Error == "" {
		t.Fatalf("smoke with the server scaled to 0 ended green:\n%s", tiltsession.Tail(log))
	}
	if reason := "no ready server pod in " + s.Target.Namespace; !strings.Contains(log, reason) {
		t.Errorf("smoke with the server scaled to 0: its log does not say %q:\n%s", reason, tiltsession.Tail(log))
	}
}

// badCallsAction runs the bad-calls action: green, with the refused calls
// in its own pane, in console lines.
func (s *session) badCallsAction(t *testing.T) {
	b := s.runAction(t, "bad-calls", 3*time.Minute)
	log := string(s.Tilt(t, "logs", "bad-calls"))
	if b.Error != "" {
		t.Fatalf("bad-calls: %s\n%s", b.Error, tiltsession.Tail(log))
	}
	refused := proctest.Events(log, "echo_failed")
	if len(refused) == 0 || refused[0]["code"] != "InvalidArgument" {
		t.Errorf("bad-calls' log: %d echo failed lines (first %v), want INVALID_ARGUMENT ones, in its own pane:\n%s", len(refused), refused, tiltsession.Tail(log))
	}
	for line := range strings.Lines(log) {
		if proctest.IsJSONLogLine(strings.TrimSpace(line)) {
			t.Errorf("bad-calls' log has a JSON line, want console lines: %s", line)
			break
		}
	}
}

// loadBurstAction runs the load-burst action: green, with ghz's summary in
// its log.
func (s *session) loadBurstAction(t *testing.T) {
	b := s.runAction(t, "load-burst", 3*time.Minute)
	log := string(s.Tilt(t, "logs", "load-burst"))
	if b.Error != "" {
		t.Fatalf("load-burst: %s\n%s", b.Error, tiltsession.Tail(log))
	}
	for _, want := range []string{"Summary:", "Status code distribution:", "[OK]"} {
		if !strings.Contains(log, want) {
			t.Errorf("load-burst's log has no %q (ghz's summary):\n%s", want, tiltsession.Tail(log))
		}
	}
}

// runAction triggers the action resource name and waits, up to timeout,
// for the run it started to end.
func (s *session) runAction(t *testing.T, name string, timeout time.Duration) tiltsession.BuildRecord {
	t.Helper()
	since := time.Now().Add(-time.Second) // Tilt's times are to the microsecond, ours too fine
	s.Tilt(t, "trigger", name)
	var b tiltsession.BuildRecord
	err := proctest.Poll(t.Context(), time.Second, timeout, name+"'s run", func(context.Context) (bool, string) {
		var ok bool
		b, ok = s.BuildAfter(t, name, since)
		return ok, fmt.Sprintf("status %s", s.Resource(t, name).Status.UpdateStatus)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: ran in %v, error %q", name, b.Finish.Sub(b.Start).Round(100*time.Millisecond), b.Error)
	return b
}
