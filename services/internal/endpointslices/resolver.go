package endpointslices

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"
)

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
