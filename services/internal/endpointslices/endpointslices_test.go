package endpointslices

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
)

// testTiming is defaultTiming with the waits 100 times quicker, and
// watches that last seconds.
var testTiming = timing{
	retryMin:        10 * time.Millisecond,
	answeredMax:     800 * time.Millisecond,
	unreachableMax:  50 * time.Millisecond,
	healthyWatch:    300 * time.Millisecond,
	watchTimeoutMin: 3 * time.Second,
	watchIdle:       5 * time.Second,
	resolveNowEvery: 100 * time.Millisecond,
}

// fakeAPI serves the list and the watch of EndpointSlices: the list from
// items, each watch from the events sent on the channel until it closes.
type fakeAPI struct {
	t *testing.T

	mu     sync.Mutex
	items  []string // the list's slices, as JSON
	listRV string
	lists  int
	status int // answer lists with this code, when not 0
	watchs chan chan string
	rvs    []string // resourceVersion of each watch
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/echo/endpointslices" ||
		r.URL.Query().Get("labelSelector") != "kubernetes.io/service-name=server-service" {
		f.t.Errorf("unexpected request %s", r.URL)
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("watch") != "true" {
		f.mu.Lock()
		f.lists++
		status, body := f.status, fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"items":[%s]}`, f.listRV, strings.Join(f.items, ","))
		f.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"kind":"Status","code":%d,"message":"endpointslices is forbidden: User \"system:serviceaccount:echo:client\" cannot list"}`, status)
			return
		}
		fmt.Fprint(w, body)
		return
	}
	f.mu.Lock()
	f.rvs = append(f.rvs, r.URL.Query().Get("resourceVersion"))
	f.mu.Unlock()
	var events chan string
	select {
	case events = <-f.watchs:
	case <-r.Context().Done():
		return
	}
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			fmt.Fprintln(w, ev)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// setList makes the next lists answer items at resource version rv.
func (f *fakeAPI) setList(rv string, items ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items, f.listRV = items, rv
}

// recordingConn is the resolver's grpc-go side: what it was told, in order.
type recordingConn struct {
	resolver.ClientConn
	updates chan string // the addresses of each update, joined; or "error: ..."
}

func (c *recordingConn) UpdateState(s resolver.State) error {
	var addrs []string
	for _, a := range s.Addresses {
		addrs = append(addrs, a.Addr)
	}
	c.updates <- strings.Join(addrs, ",")
	return nil
}

func (c *recordingConn) ReportError(err error) { c.updates <- "error: " + err.Error() }

func (c *recordingConn) next(t *testing.T) string {
	t.Helper()
	select {
	case u := <-c.updates:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update from the resolver in 5s")
		return ""
	}
}

// slice is an EndpointSlice of server-service as JSON; each endpoint is
// "address", "address:notready" or "address:terminating" (serving while it
// terminates).
func slice(name, port string, endpoints ...string) string {
	var eps []string
	for _, e := range endpoints {
		addr, state, _ := strings.Cut(e, ":")
		cond := `{"ready":true,"serving":true,"terminating":false}`
		switch state {
		case "notready":
			cond = `{"ready":false,"serving":false,"terminating":false}`
		case "terminating":
			cond = `{"ready":false,"serving":true,"terminating":true}`
		case "stopped":
			cond = `{"ready":false,"serving":false,"terminating":true}`
		}
		eps = append(eps, fmt.Sprintf(`{"addresses":[%q],"conditions":%s}`, addr, cond))
	}
	return fmt.Sprintf(`{"metadata":{"name":%q,"resourceVersion":"1"},"addressType":"IPv4","endpoints":[%s],"ports":[{"name":"metrics","port":9000},{"name":"grpc","port":%s}]}`,
		name, strings.Join(eps, ","), port)
}

func event(typ, object string) string {
	b, _ := json.Marshal(map[string]json.RawMessage{"type": json.RawMessage(fmt.Sprintf("%q", typ)), "object": json.RawMessage(object)})
	return string(b)
}

func startResolver(t *testing.T, f *fakeAPI, endpoint string) *recordingConn {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	b := newBuilder(&kubeAPI{base: srv.URL, http: srv.Client()}, "echo", zap.NewNop(), testTiming)
	cc := &recordingConn{updates: make(chan string, 100)}
	r, err := b.Build(resolver.Target{URL: *mustURL(t, "kubernetes:///"+endpoint)}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return cc
}

// The addresses are those of every slice of the Service: a pod's and this
// machine's (--local) together, then either alone as the other goes.
func TestSliceResolverMergesSlices(t *testing.T) {
	f := &fakeAPI{t: t, listRV: "10", watchs: make(chan chan string),
		items: []string{slice("server-service-abc", "20000", "10.244.0.7", "10.244.0.8:notready")}}
	cc := startResolver(t, f, "server-service.echo:grpc")
	events := make(chan string)
	f.watchs <- events
	steps := []struct {
		event, want string
	}{
		{"", "10.244.0.7:20000"},
		{event("ADDED", slice("server-service-local", "20000", "10.244.0.1")), "10.244.0.1:20000,10.244.0.7:20000"},
		// The pod stops: it is terminating, and this machine is ready.
		{event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.7:terminating")), "10.244.0.1:20000"},
		// This machine leaves: the terminating pod still serves, so calls go there.
		{event("DELETED", slice("server-service-local", "20000", "10.244.0.1")), "10.244.0.7:20000"},
		// None left: the last addresses are dropped.
		{event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.9:notready")), ""},
		{event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.9")), "10.244.0.9:20000"},
	}
	for i, s := range steps {
		if s.event != "" {
			events <- s.event
		}
		if got := cc.next(t); got != s.want {
			t.Fatalf("step %d: addresses %q, want %q", i, got, s.want)
		}
	}
	// An event that changes no address tells grpc-go nothing.
	events <- event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.9", "10.244.0.10:notready"))
	events <- event("ADDED", slice("server-service-xyz", "20000", "10.244.0.11"))
	if got := cc.next(t); got != "10.244.0.11:20000,10.244.0.9:20000" {
		t.Fatalf("after an unchanged and a new slice: %q", got)
	}
	// Every endpoint not ready at once (a node marked NotReady): the
	// addresses called before stay (no empty update comes), until one is
	// ready again.
	events <- event("DELETED", slice("server-service-xyz", "20000", "10.244.0.11"))
	if got := cc.next(t); got != "10.244.0.9:20000" {
		t.Fatalf("after a slice deleted: %q", got)
	}
	events <- event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.9:notready", "10.244.0.10:notready"))
	events <- event("MODIFIED", slice("server-service-abc", "20000", "10.244.0.9:notready", "10.244.0.10"))
	if got := cc.next(t); got != "10.244.0.10:20000" {
		t.Fatalf("with no endpoint ready, then one: %q, want no update in between", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"10"}, f.rvs); diff != "" {
		t.Errorf("watches from resource versions (-want +got):\n%s", diff)
	}
}

// A watch that the API ends, or whose version is too old, is followed by a
// new list, which replaces every slice (one deleted meanwhile is gone).
func TestSliceResolverListsAgain(t *testing.T) {
	f := &fakeAPI{t: t, listRV: "10", watchs: make(chan chan string),
		items: []string{slice("a", "20000", "10.244.0.7"), slice("b", "20000", "10.244.0.8")}}
	cc := startResolver(t, f, "server-service:20000")
	if got := cc.next(t); got != "10.244.0.7:20000,10.244.0.8:20000" {
		t.Fatalf("first list: %q", got)
	}
	events := make(chan string)
	f.watchs <- events
	f.setList("20", slice("a", "20000", "10.244.0.7"))
	events <- event("ERROR", `{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 10 (15)"}`)
	if got := cc.next(t); got != "10.244.0.7:20000" {
		t.Fatalf("after a 410: %q", got)
	}
	events2 := make(chan string)
	f.watchs <- events2
	f.setList("30", slice("c", "20000", "10.244.0.9"))
	close(events2) // the API ends the watch at once: a failure, waited for
	if got := cc.next(t); !strings.Contains(got, "the API ended the watch after") {
		t.Fatalf("after the watch ended at once: %q", got)
	}
	events3 := make(chan string)
	f.watchs <- events3
	if got := cc.next(t); got != "10.244.0.9:20000" {
		t.Fatalf("after the watch ended: %q", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"10", "20", "30"}, f.rvs); diff != "" {
		t.Errorf("watches from resource versions (-want +got):\n%s", diff)
	}
}

// A refused list is reported with the API's own message, and retried.
func TestSliceResolverReportsAPIErrors(t *testing.T) {
	f := &fakeAPI{t: t, listRV: "10", watchs: make(chan chan string), status: http.StatusForbidden}
	cc := startResolver(t, f, "server-service.echo:grpc")
	got := cc.next(t)
	if !strings.Contains(got, "EndpointSlices of echo/server-service: list: 403: endpointslices is forbidden") {
		t.Fatalf("reported %q", got)
	}
	f.mu.Lock()
	f.status, f.items = 0, []string{slice("a", "20000", "10.244.0.7")}
	f.mu.Unlock()
	if got := cc.next(t); got != "10.244.0.7:20000" {
		t.Fatalf("after the retry: %q", got)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Through grpc-go: calls go to the slices' address, and once the Service
// has no ready endpoint they fail, though the address that went away
// still serves.
func TestSliceResolverWithGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	port := fmt.Sprint(lis.Addr().(*net.TCPAddr).Port)

	f := &fakeAPI{t: t, listRV: "10", watchs: make(chan chan string),
		items: []string{slice("a", port, "127.0.0.1")}}
	api := httptest.NewServer(f)
	t.Cleanup(api.Close)
	b := newBuilder(&kubeAPI{base: api.URL, http: api.Client()}, "echo", zap.NewNop(), testTiming)
	conn, err := grpc.NewClient("kubernetes:///server-service.echo:grpc", grpc.WithResolvers(b),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	check := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	// The first call starts the resolver (grpc-go's channel starts idle).
	if err := check(); err != nil {
		t.Fatalf("a call to the slice's address: %v", err)
	}
	events := make(chan string)
	f.watchs <- events
	// Not ready, but still listed with nothing else ready: still called.
	events <- event("MODIFIED", slice("a", port, "127.0.0.1:notready"))
	for i := range 5 {
		if err := check(); err != nil {
			t.Fatalf("call %d to the only address, listed but not ready: %v", i+1, err)
		}
	}
	f.setList("10", slice("a", port, "127.0.0.2:notready"))
	events <- event("MODIFIED", slice("a", port, "127.0.0.2:notready"))
	// The event reaches grpc-go a moment later (a new picker, after calls
	// that take well under a millisecond each); from then on no call goes
	// through.
	failed := false
	for deadline := time.Now().Add(5 * time.Second); !failed && time.Now().Before(deadline); {
		failed = check() != nil
	}
	if !failed {
		t.Fatal("with no ready endpoint, calls still went on to the address that left the slices 5s after the event")
	}
	for i := range 3 {
		if err := check(); err == nil {
			t.Fatalf("call %d after the first failure went through to the address that left the slices", i+1)
		}
	}
}
