// Package endpointslices is grpc-go's resolver of kubernetes:/// targets:
// the endpoints of every EndpointSlice of a Service, listed and then
// watched through the Kubernetes API with the pod's service account.
//
// It replaces kuberesolver (v6), which handled each slice as if it were the
// Service's only one: with two slices (the EndpointSlice controller's and one
// that names a developer's machine, --local in the Tiltfile) each event
// replaced the addresses with one slice's, a deleted slice's addresses were
// taken up again, and a Service left with no ready endpoint kept its last
// addresses. This one keeps every slice by name and balances over the union.
//
// When the API fails, the last addresses stay: calls go on to the pods that
// were there. Every failure waits before the next request, doubling with
// jitter; an API that answers with errors (or ends every watch at once) is
// asked less and less often, down to one request per 30s; one that does not
// answer at all is tried again within seconds of its return.
package endpointslices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"
)

// Scheme is the scheme of the targets this package resolves:
// kubernetes:///service.namespace:port.
const Scheme = "kubernetes"

// The EndpointSlice fields the resolver reads (discovery.k8s.io/v1).
type endpointSlice struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	AddressType string `json:"addressType"`
	Endpoints   []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready       *bool `json:"ready"`
			Serving     *bool `json:"serving"`
			Terminating *bool `json:"terminating"`
		} `json:"conditions"`
	} `json:"endpoints"`
	Ports []struct {
		Name *string `json:"name"`
		Port *int32  `json:"port"`
	} `json:"ports"`
}

type sliceList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []endpointSlice `json:"items"`
}

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// sliceTarget is what kubernetes:///service.namespace:port names: the
// Service, its namespace and its port, by name or number.
type sliceTarget struct {
	service, namespace, port string
}

// parseSliceTarget reads the endpoint of a kubernetes:/// target. The
// namespace may be left out (the pod's own); the port may not.
func parseSliceTarget(endpoint, ownNamespace string) (sliceTarget, error) {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || port == "" {
		return sliceTarget{}, fmt.Errorf("%q: want service.namespace:port (the port by number or by the Service port's name)", endpoint)
	}
	service, namespace, _ := strings.Cut(host, ".")
	if namespace == "" {
		namespace = ownNamespace
	}
	if service == "" || namespace == "" || strings.Contains(namespace, ".") {
		return sliceTarget{}, fmt.Errorf("%q: want service.namespace:port, such as server-service.echo:grpc", endpoint)
	}
	return sliceTarget{service: service, namespace: namespace, port: port}, nil
}

// portOf is the port of slice s that the target names, by name or number.
func (t sliceTarget) portOf(s endpointSlice) (int32, bool) {
	n, err := strconv.ParseInt(t.port, 10, 32)
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if (err == nil && int64(*p.Port) == n) || (err != nil && p.Name != nil && *p.Name == t.port) {
			return *p.Port, true
		}
	}
	return 0, false
}

// addresses is where the calls go: every ready endpoint of every slice, on
// the target's port; when none is ready, those still serving while they
// terminate (as kube-proxy does), so that calls go on while the only pods
// are stopping and their replacement (a pod, or this machine) is not yet
// in a slice. When neither is left, those of previous (the last addresses)
// that are still listed: every endpoint not ready at once is what a node
// marked NotReady does to its pods (the controller lost touch with the
// node after an API server outage, and the kubelet has not reported since),
// and a pod that served a moment ago most likely still does; calls that
// would all fail without it may then succeed (Envoy's panic routing does
// the same).
func (t sliceTarget) addresses(all map[string]endpointSlice, previous []string) []resolver.Address {
	var ready, terminating, listed []string
	for _, s := range all {
		port, ok := t.portOf(s)
		if !ok || (s.AddressType != "IPv4" && s.AddressType != "IPv6") {
			continue
		}
		for _, e := range s.Endpoints {
			c := e.Conditions
			// An unknown condition counts as true, as the API asks.
			isReady := c.Ready == nil || *c.Ready
			serving := c.Serving == nil || *c.Serving
			stopping := c.Terminating != nil && *c.Terminating
			for _, a := range e.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
				switch {
				case isReady:
					ready = append(ready, addr)
				case serving && stopping:
					terminating = append(terminating, addr)
				case !stopping && slices.Contains(previous, addr):
					listed = append(listed, addr)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = terminating
	}
	if len(ready) == 0 {
		ready = listed
	}
	slices.Sort(ready)
	ready = slices.Compact(ready)
	out := make([]resolver.Address, len(ready))
	for i, a := range ready {
		out[i] = resolver.Address{Addr: a}
	}
	return out
}

// Builder builds kubernetes:/// resolvers for grpc-go.
type Builder struct {
	api          *kubeAPI
	ownNamespace string
	log          *zap.Logger
	timing       timing

	resolvedOnce sync.Once
	resolved     chan struct{}
}

// NewBuilder resolves kubernetes:/// targets in the cluster this pod runs
// in, or says why it cannot (not in a pod, no service account mounted).
func NewBuilder(log *zap.Logger) (*Builder, error) {
	api, err := inClusterAPI()
	if err != nil {
		return nil, err
	}
	ns, err := os.ReadFile(serviceAccountDir + "/namespace")
	if err != nil {
		return nil, fmt.Errorf("the pod's namespace: %w", err)
	}
	return newBuilder(api, strings.TrimSpace(string(ns)), log, defaultTiming), nil
}

func newBuilder(api *kubeAPI, ownNamespace string, log *zap.Logger, t timing) *Builder {
	return &Builder{api: api, ownNamespace: ownNamespace, log: log, timing: t, resolved: make(chan struct{})}
}

// Resolved is closed once a resolver of this builder knows what it can
// know: it has given grpc-go addresses, or its first list has failed (the
// API is unreachable or refuses). A program is ready to call then, not
// before: a new process would otherwise report ready with no address where
// the one it replaces had them.
func (b *Builder) Resolved() <-chan struct{} { return b.resolved }

func (b *Builder) markResolved() { b.resolvedOnce.Do(func() { close(b.resolved) }) }

func (b *Builder) Scheme() string { return Scheme }

func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	t, err := parseSliceTarget(target.Endpoint(), b.ownNamespace)
	if err != nil {
		return nil, fmt.Errorf("kubernetes:/// target %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &sliceResolver{
		api:      b.api,
		target:   t,
		cc:       cc,
		log:      b.log.With(zap.String("service", t.namespace+"/"+t.service), zap.String("port", t.port)),
		timing:   b.timing,
		resolved: b.markResolved,
		cancel:   cancel,
		done:     make(chan struct{}),
		now:      make(chan struct{}, 1),
	}
	go r.run(ctx)
	return r, nil
}

// timing is how the resolver paces its requests.
type timing struct {
	retryMin        time.Duration // the first wait after a failure
	answeredMax     time.Duration // the longest wait when the API answered (an error, a watch that ended at once)
	unreachableMax  time.Duration // the longest wait when it did not answer
	healthyWatch    time.Duration // a watch that lived this long resets the waits
	watchTimeoutMin time.Duration // the API ends a watch after a time drawn between min and 2*min
	watchIdle       time.Duration // a watch silent this long (no event, no bookmark) is ended
	resolveNowEvery time.Duration // at most one list asked by grpc-go (ResolveNow) per this
}

// defaultTiming: a failure waits 1s, doubling, up to 80s while the API
// answers (each wait drawn between 3/4 of it and all of it: a list and a
// watch every 60 to 80s at most, one request per 30s), up to 5s while it
// is unreachable. Watches last 5 to 10 minutes, as
// client-go's; one silent for 2 minutes (no event, no bookmark) is ended
// and the slices listed again, in case its connection is gone without a
// word (HTTP/2's pings catch most of those sooner).
var defaultTiming = timing{
	retryMin:        time.Second,
	answeredMax:     80 * time.Second,
	unreachableMax:  5 * time.Second,
	healthyWatch:    30 * time.Second,
	watchTimeoutMin: 5 * time.Minute,
	watchIdle:       2 * time.Minute,
	resolveNowEvery: 10 * time.Second,
}

// sliceResolver follows one Service's EndpointSlices.
type sliceResolver struct {
	api      *kubeAPI
	target   sliceTarget
	cc       resolver.ClientConn
	log      *zap.Logger
	timing   timing
	resolved func()
	cancel   context.CancelFunc
	done     chan struct{}
	now      chan struct{} // ResolveNow: list again

	slices map[string]endpointSlice // by name
	last   []string                 // the addresses last given to grpc-go
	sent   bool                     // whether any were

	mu       sync.Mutex
	lastList time.Time // of a list asked by ResolveNow
}

// ResolveNow is grpc-go's hint that a connection failed: the watch may be
// dead without knowing it yet, so list again, at most once per
// resolveNowEvery.
func (r *sliceResolver) ResolveNow(resolver.ResolveNowOptions) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastList) < r.timing.resolveNowEvery {
		return
	}
	r.lastList = time.Now()
	select {
	case r.now <- struct{}{}:
	default:
	}
}

func (r *sliceResolver) Close() {
	r.cancel()
	<-r.done
}

// errGone is the API's 410: the watch's resource version is too old; list
// again.
var errGone = errors.New("resource version too old")

// errRelist ends a watch that ResolveNow asked to replace with a list.
var errRelist = errors.New("list asked for by grpc-go")

// errIdle ends a watch on which nothing came for watchIdle: list again.
var errIdle = errors.New("no event or bookmark within the watch's idle time")

func (r *sliceResolver) run(ctx context.Context) {
	defer close(r.done)
	delay := r.timing.retryMin
	first := true
	for ctx.Err() == nil {
		rv, err := r.list(ctx)
		if first {
			// The first list answered (addresses given) or failed: either
			// way the program knows what it can know.
			first = false
			r.resolved()
		}
		var lived time.Duration
		if err == nil {
			began := time.Now()
			err = r.watch(ctx, rv)
			lived = time.Since(began)
		}
		if ctx.Err() != nil {
			return
		}
		if lived >= r.timing.healthyWatch {
			delay = r.timing.retryMin
		}
		switch {
		case errors.Is(err, errRelist):
			continue
		case errors.Is(err, errIdle):
			// On a quiet cluster the API may send no bookmark for a long
			// while: a list costs little, and tells a dead connection from
			// a quiet one.
			r.log.Debug("the watch was silent: listing again", zap.Duration("after", lived.Round(time.Second)))
			continue
		case err == nil && lived >= r.timing.healthyWatch:
			continue // a watch that lived and ended, as watches do: list again at once
		case err == nil:
			err = fmt.Errorf("the API ended the watch after %v", lived.Round(time.Millisecond))
		}
		limit := r.timing.answeredMax
		var unreachable *unreachableError
		if errors.As(err, &unreachable) {
			limit = r.timing.unreachableMax
		}
		delay = min(delay, limit)
		wait := delay*3/4 + rand.N(delay/4+1)
		if errors.Is(err, errGone) {
			r.log.Info("the watch's resource version is too old; listing again", zap.Duration("in", wait))
		} else {
			r.log.Warn("cannot follow the Service's EndpointSlices; keeping the last addresses and retrying", zap.Error(err), zap.Duration("in", wait))
			r.cc.ReportError(fmt.Errorf("EndpointSlices of %s/%s: %w", r.target.namespace, r.target.service, err))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.now:
		case <-time.After(wait):
		}
		delay = min(2*delay, limit)
	}
}

func (r *sliceResolver) query() string {
	return "/apis/discovery.k8s.io/v1/namespaces/" + url.PathEscape(r.target.namespace) + "/endpointslices?labelSelector=" +
		url.QueryEscape("kubernetes.io/service-name="+r.target.service)
}

// list reads every slice of the Service and returns the list's resource
// version, from which the watch goes on.
func (r *sliceResolver) list(ctx context.Context) (string, error) {
	resp, err := r.api.get(ctx, r.query())
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	defer resp.Body.Close()
	var l sliceList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	r.slices = make(map[string]endpointSlice, len(l.Items))
	for _, s := range l.Items {
		r.slices[s.Metadata.Name] = s
	}
	r.update()
	return l.Metadata.ResourceVersion, nil
}

// watch applies each change of a slice until the API ends the watch (after
// the timeoutSeconds it asks for: nil), it fails, nothing arrives for
// watchIdle, or ResolveNow asks for a list.
func (r *sliceResolver) watch(ctx context.Context, rv string) error {
	timeout := r.timing.watchTimeoutMin + rand.N(r.timing.watchTimeoutMin+1)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := r.api.get(ctx, r.query()+"&watch=true&allowWatchBookmarks=true&timeoutSeconds="+
		strconv.Itoa(max(1, int(timeout.Seconds())))+"&resourceVersion="+url.QueryEscape(rv))
	if err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusGone {
			return errGone
		}
		return fmt.Errorf("watch: %w", err)
	}
	defer resp.Body.Close()
	idle := time.AfterFunc(r.timing.watchIdle, func() { cancel(errIdle) })
	defer idle.Stop()
	stop := context.AfterFunc(ctx, func() { resp.Body.Close() }) // unblocks the read
	defer stop()
	go func() {
		select {
		case <-r.now:
			cancel(errRelist)
		case <-ctx.Done():
		}
	}()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			switch cause := context.Cause(ctx); {
			case errors.Is(cause, errIdle):
				return errIdle
			case errors.Is(cause, errRelist):
				return errRelist
			}
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("watch: %w", &unreachableError{err: err})
		}
		idle.Reset(r.timing.watchIdle)
		switch ev.Type {
		case "ADDED", "MODIFIED", "DELETED":
			var s endpointSlice
			if err := json.Unmarshal(ev.Object, &s); err != nil {
				return fmt.Errorf("watch: a %s EndpointSlice: %w", ev.Type, err)
			}
			if ev.Type == "DELETED" {
				delete(r.slices, s.Metadata.Name)
			} else {
				r.slices[s.Metadata.Name] = s
			}
			r.update()
		case "BOOKMARK":
		case "ERROR":
			var st apiStatus
			if json.Unmarshal(ev.Object, &st) == nil && st.Code == http.StatusGone {
				return errGone
			}
			return fmt.Errorf("watch: %s", ev.Object)
		default:
			return fmt.Errorf("watch: unknown event type %q", ev.Type)
		}
	}
}

// update gives grpc-go the addresses when they changed. With none, calls
// fail after waiting for their deadline (round_robin: "no children to pick
// from") rather than go on to addresses that no longer serve; the log says
// why.
func (r *sliceResolver) update() {
	addrs := r.target.addresses(r.slices, r.last)
	names := make([]string, len(addrs))
	for i, a := range addrs {
		names[i] = a.Addr
	}
	if r.sent && slices.Equal(names, r.last) {
		return
	}
	r.sent, r.last = true, names
	if len(addrs) == 0 {
		r.log.Warn("no ready endpoint in the Service's EndpointSlices: calls wait for one, then fail", zap.Int("slices", len(r.slices)))
		// An error alone would leave grpc-go on the last addresses.
		r.cc.UpdateState(resolver.State{}) //nolint:errcheck // refused for being empty, as meant
		return
	}
	r.log.Info("servers", zap.Strings("addresses", names), zap.Int("slices", len(r.slices)))
	if err := r.cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
		r.log.Warn("the balancer refused the addresses", zap.Error(err))
	}
}
