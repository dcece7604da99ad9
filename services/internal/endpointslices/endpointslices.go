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
	"fmt"
	"os"
	"strings"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"
)

// Scheme is the scheme of the targets this package resolves:
// kubernetes:///service.namespace:port.
const Scheme = "kubernetes"

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
