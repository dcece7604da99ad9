package main

// The kubernetes:/// resolver: the endpoints of every EndpointSlice of a
// Service, listed and then watched through the Kubernetes API.
//
// It replaces kuberesolver (v6), which handled each slice as if it were the
// Service's only one: with two slices (the EndpointSlice controller's and one
// that names this developer's machine, --local in the Tiltfile) each event
// replaced the addresses with one slice's, a deleted slice's addresses were
// taken up again, and a Service left with no ready endpoint kept its last
// addresses. This one keeps every slice by name and balances over the union.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

// The pod's service account, as the kubelet mounts it.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// tokenMaxAge is how long a read of the service account token is used: the
// kubelet rotates the file well before the token expires (client-go rereads
// it as often).
const tokenMaxAge = time.Minute

// kubeAPI is the Kubernetes API as a pod's service account reaches it.
type kubeAPI struct {
	base      string // https://host:port
	http      *http.Client
	tokenFile string

	mu      sync.Mutex
	token   string
	readAt  time.Time
	readErr error
}

// inClusterAPI is the API of the cluster this pod runs in, or an error that
// says why there is none (not in a pod, no token mounted).
func inClusterAPI() (*kubeAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return nil, fmt.Errorf("the service account's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("the service account's CA (%s/ca.crt): no certificate in it", serviceAccountDir)
	}
	a := &kubeAPI{
		base:      "https://" + net.JoinHostPort(host, port),
		http:      &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
		tokenFile: serviceAccountDir + "/token",
	}
	if _, err := a.bearer(); err != nil {
		return nil, err
	}
	return a, nil
}

// bearer is the service account token, read again once it is a minute old.
func (a *kubeAPI) bearer() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.readAt.IsZero() || time.Since(a.readAt) > tokenMaxAge {
		b, err := os.ReadFile(a.tokenFile)
		a.readAt, a.readErr = time.Now(), err
		if err == nil {
			a.token = strings.TrimSpace(string(b))
		}
	}
	if a.token == "" {
		return "", fmt.Errorf("the service account token: %w", a.readErr)
	}
	return a.token, nil
}

// get sends a GET of path (with its query) and returns the response when it
// is 200 OK.
func (a *kubeAPI) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	if a.tokenFile != "" {
		token, err := a.bearer()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var st apiStatus
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&st) == nil && st.Message != "" {
			return nil, &statusError{code: resp.StatusCode, message: st.Message}
		}
		return nil, &statusError{code: resp.StatusCode, message: resp.Status}
	}
	return resp, nil
}

// apiStatus is the API's metav1.Status, as much as is read of it.
type apiStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type statusError struct {
	code    int
	message string
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.message) }

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
// in a slice.
func (t sliceTarget) addresses(all map[string]endpointSlice) []resolver.Address {
	var ready, terminating []string
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
			for _, a := range e.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(port)))
				switch {
				case isReady:
					ready = append(ready, addr)
				case serving && c.Terminating != nil && *c.Terminating:
					terminating = append(terminating, addr)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = terminating
	}
	slices.Sort(ready)
	ready = slices.Compact(ready)
	out := make([]resolver.Address, len(ready))
	for i, a := range ready {
		out[i] = resolver.Address{Addr: a}
	}
	return out
}

// sliceBuilder builds kubernetes:/// resolvers.
type sliceBuilder struct {
	api          *kubeAPI
	ownNamespace string
	log          *zap.Logger
}

// newSliceBuilder resolves kubernetes:/// targets in the cluster this pod
// runs in.
func newSliceBuilder(log *zap.Logger) (*sliceBuilder, error) {
	api, err := inClusterAPI()
	if err != nil {
		return nil, err
	}
	ns, err := os.ReadFile(serviceAccountDir + "/namespace")
	if err != nil {
		return nil, fmt.Errorf("the pod's namespace: %w", err)
	}
	return &sliceBuilder{api: api, ownNamespace: strings.TrimSpace(string(ns)), log: log}, nil
}

func (b *sliceBuilder) Scheme() string { return kubernetesScheme }

func (b *sliceBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	t, err := parseSliceTarget(target.Endpoint(), b.ownNamespace)
	if err != nil {
		return nil, fmt.Errorf("kubernetes:/// target %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &sliceResolver{
		api:    b.api,
		target: t,
		cc:     cc,
		log:    b.log.With(zap.String("service", t.namespace+"/"+t.service), zap.String("port", t.port)),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go r.run(ctx)
	return r, nil
}

// Resolver backoff after a failed list or watch: 0.5s doubling to 30s.
const (
	sliceRetryMin = 500 * time.Millisecond
	sliceRetryMax = 30 * time.Second
)

// sliceResolver follows one Service's EndpointSlices.
type sliceResolver struct {
	api    *kubeAPI
	target sliceTarget
	cc     resolver.ClientConn
	log    *zap.Logger
	cancel context.CancelFunc
	done   chan struct{}

	slices map[string]endpointSlice // by name
	last   []string                 // the addresses last given to grpc-go
	sent   bool                     // whether any were
}

// ResolveNow is a hint that grpc-go gives when a connection fails; the
// watch tells of every change, so there is nothing to do.
func (r *sliceResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *sliceResolver) Close() {
	r.cancel()
	<-r.done
}

// errGone is the API's 410: the watch's resource version is too old; list
// again.
var errGone = errors.New("resource version too old")

func (r *sliceResolver) run(ctx context.Context) {
	defer close(r.done)
	delay := sliceRetryMin
	for ctx.Err() == nil {
		rv, err := r.list(ctx)
		if err == nil {
			delay = sliceRetryMin
			err = r.watch(ctx, rv)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errGone) || err == nil {
			continue // list again at once: the watch ended, or its version is too old
		}
		r.log.Warn("cannot follow the Service's EndpointSlices; retrying", zap.Error(err), zap.Duration("in", delay))
		r.cc.ReportError(fmt.Errorf("EndpointSlices of %s/%s: %w", r.target.namespace, r.target.service, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay/2 + rand.N(delay/2)):
		}
		delay = min(2*delay, sliceRetryMax)
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

// watch applies each change of a slice until the API ends the watch
// (normally after 5 to 10 minutes: nil) or fails.
func (r *sliceResolver) watch(ctx context.Context, rv string) error {
	resp, err := r.api.get(ctx, r.query()+"&watch=true&allowWatchBookmarks=true&resourceVersion="+url.QueryEscape(rv))
	if err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusGone {
			return errGone
		}
		return fmt.Errorf("watch: %w", err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch: %w", err)
		}
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
	addrs := r.target.addresses(r.slices)
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
