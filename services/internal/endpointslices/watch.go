package endpointslices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"
)

// sliceList is the answer to a list of EndpointSlices.
type sliceList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []endpointSlice `json:"items"`
}

// watchEvent is one event of a watch: a slice added, modified or deleted,
// a bookmark, or an error.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
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
