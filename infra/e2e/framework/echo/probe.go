package echo

import (
	"sync"
	"testing"

	"example.com/grpc-metrics/infra/e2e/framework/kube"
	"example.com/grpc-metrics/infra/proctest"
)

// PodProbe follows one pod: its log, for the start of each process and the
// revision it runs (cheap, and at once), and its metrics through a
// port-forward, for whether that process answers. It opens no connection to
// the program's gRPC port: a connection through a port-forward lingers in
// the pod for about a second after it is closed, and the server's graceful
// stop would wait for it.
type PodProbe struct {
	Pod     string
	metrics string // the URL of its /metrics

	mu      sync.Mutex
	serving map[string]bool // revisions whose process logged that it serves
}

// Started reports whether a process of revision rev has logged that it serves.
func (p *PodProbe) Started(rev string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serving[rev]
}

func NewProbes(t testing.TB, c *kube.Cluster, ns, app string) []*PodProbe {
	t.Helper()
	var out []*PodProbe
	for _, p := range c.MustPods(t, ns, app, false, 0) {
		pp := &PodProbe{Pod: p.Name, metrics: MetricsURL(t, c, ns, p.Name), serving: map[string]bool{}}
		pp.follow(t, c, ns)
		out = append(out, pp)
	}
	return out
}

// follow streams the pod's log from now on and reports each process that
// logs the event "serving" (the server) or "calling" (the client), with the
// revision of its "starting" line.
func (p *PodProbe) follow(t testing.TB, c *kube.Cluster, ns string) {
	t.Helper()
	revision := ""
	c.FollowLog(t, ns, p.Pod, func(text []byte) {
		line, ok := proctest.ParseLogLine(string(text))
		if !ok {
			return
		}
		switch line["event"] {
		case "starting":
			revision, _ = line["revision"].(string)
		case "serving", "calling":
			p.mu.Lock()
			p.serving[revision] = true
			p.mu.Unlock()
		}
	})
}

// State returns the revision the pod's program reports and whether that
// process answers: the server has answered a call of the client since it
// started, the client has made a successful call.
func (p *PodProbe) State(program string) (revision string, answering bool) {
	mfs, err := proctest.Scrape(p.metrics)
	if err != nil {
		return "", false
	}
	revision = RevisionOf(mfs, program)
	if program == "server" {
		return revision, Answered(mfs) >= 1
	}
	ok, _ := ClientCalls(mfs)
	return revision, ok >= 1
}
