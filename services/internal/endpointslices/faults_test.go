package endpointslices

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"
)

// faultyAPI answers every request with answer, and records when each came.
type faultyAPI struct {
	answer func(w http.ResponseWriter, r *http.Request)

	mu    sync.Mutex
	times []time.Time
	kinds []string // "list" or "watch"
	query []string
}

func (f *faultyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := "list"
	if r.URL.Query().Get("watch") == "true" {
		kind = "watch"
	}
	f.mu.Lock()
	f.times, f.kinds, f.query = append(f.times, time.Now()), append(f.kinds, kind), append(f.query, r.URL.RawQuery)
	f.mu.Unlock()
	f.answer(w, r)
}

func (f *faultyAPI) requests() ([]time.Time, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times...), append([]string(nil), f.kinds...)
}

const oneSlice = `{"metadata":{"resourceVersion":"10"},"items":[{"metadata":{"name":"a"},"addressType":"IPv4","endpoints":[{"addresses":["10.244.0.7"]}],"ports":[{"name":"grpc","port":20000}]}]}`

// listOK answers a list with one slice; watch answers the watches.
func listOK(watch func(w http.ResponseWriter, r *http.Request)) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "true" {
			fmt.Fprint(w, oneSlice)
			return
		}
		watch(w, r)
	}
}

// silentWatch answers a list with one slice and keeps each watch open
// with nothing on it.
var silentWatch = listOK(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	<-r.Context().Done()
})

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","code":%d,"message":"no"}`, code)
	}
}

// startFaulty builds a resolver against f with timing tm.
func startFaulty(t *testing.T, f *faultyAPI, tm timing) (*Builder, *sliceResolver, *recordingConn) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	b := newBuilder(&kubeAPI{base: srv.URL, http: srv.Client()}, "echo", zap.NewNop(), tm)
	cc := &recordingConn{updates: make(chan string, 1000)}
	r, err := b.Build(resolver.Target{URL: *mustURL(t, "kubernetes:///server-service.echo:grpc")}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return b, r.(*sliceResolver), cc
}

// An API that answers every request badly is asked less and less often:
// after the first five requests at most one per retryMin (one a second),
// and, once the waits have grown to their longest, at most two requests (a
// list and a watch) per 0.75*answeredMax: one per 30s. testTiming is 100
// times quicker.
func TestSliceResolverBacksOffAMisbehavingAPI(t *testing.T) {
	tm := testTiming
	tm.answeredMax = 800 * time.Millisecond
	for name, answer := range map[string]func(http.ResponseWriter, *http.Request){
		"every watch ends at once": listOK(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
		"every watch is 410": listOK(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}`)
		}),
		"every watch's start is 410": listOK(status(http.StatusGone)),
		"403":                        status(http.StatusForbidden),
		"500":                        status(http.StatusInternalServerError),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := &faultyAPI{answer: answer}
			startFaulty(t, f, tm)
			time.Sleep(4 * time.Second)
			times, kinds := f.requests()
			if len(times) < 6 {
				t.Fatalf("%d requests in 4s, want the resolver to go on trying", len(times))
			}
			for k := 5; k < len(times); k++ {
				if allowed := 1 + int(times[k].Sub(times[4])/tm.retryMin); k-4 > allowed {
					t.Errorf("request %d came %v after the fifth: %d requests since, want at most %d (one per %v)", k+1, times[k].Sub(times[4]), k-4, allowed, tm.retryMin)
				}
			}
			// The lists, late in the run: the waits have grown to the longest.
			var lists []time.Time
			for i, k := range kinds {
				if k == "list" {
					lists = append(lists, times[i])
				}
			}
			if len(lists) < 3 {
				t.Fatalf("%d lists, want more", len(lists))
			}
			last := lists[len(lists)-1].Sub(lists[len(lists)-2])
			t.Logf("%d requests in 4s (400s at full scale), the last two lists %v apart (%v at full scale)", len(times), last.Round(time.Millisecond), (100 * last).Round(time.Second))
			if min := tm.answeredMax * 3 / 4; last < min-10*time.Millisecond {
				t.Errorf("the last two lists %v apart, want at least %v once the waits are at their longest (%d requests, lists at %v)", last, min, len(times), lists)
			}
			// The longest wait is capped: one request per answeredMax at most,
			// never less often (200ms for the scheduler of a busy machine).
			if max := tm.answeredMax + 200*time.Millisecond; last > max {
				t.Errorf("the last two lists %v apart, want at most %v: the waits grow past their cap", last, max)
			}
		})
	}
}

// An API that does not answer at all is tried again soon, at least every
// unreachableMax (5s), and the last addresses stay meanwhile: calls go on
// to the pods that were there.
func TestSliceResolverKeepsAddressesWhileTheAPIIsGone(t *testing.T) {
	var down atomic.Bool
	f := &faultyAPI{}
	f.answer = func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		listOK(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(200 * time.Millisecond): // then the connection breaks
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			}
		})(w, r)
	}
	_, _, cc := startFaulty(t, f, testTiming)
	if got := cc.next(t); got != "10.244.0.7:20000" {
		t.Fatalf("first list: %q", got)
	}
	down.Store(true)
	time.Sleep(time.Second)
	drain := func() []string {
		var got []string
		for {
			select {
			case u := <-cc.updates:
				got = append(got, u)
			default:
				return got
			}
		}
	}
	for _, u := range drain() {
		if !strings.HasPrefix(u, "error: ") {
			t.Errorf("while the API was gone the resolver gave grpc-go %q, want the last addresses kept (errors only)", u)
		}
	}
	times, _ := f.requests()
	n := len(times)
	for i := n - 5; i < n-1 && i > 0; i++ {
		if gap := times[i+1].Sub(times[i]); gap > testTiming.unreachableMax+50*time.Millisecond {
			t.Errorf("requests %v apart while the API was gone, want at most about %v", gap, testTiming.unreachableMax)
		}
	}
}

// A watch that stays connected but silent (no event, no bookmark) is ended
// after watchIdle and the slices listed again.
func TestSliceResolverEndsASilentWatch(t *testing.T) {
	tm := testTiming
	tm.watchIdle = 300 * time.Millisecond
	f := &faultyAPI{answer: silentWatch}
	startFaulty(t, f, tm)
	time.Sleep(time.Second)
	times, kinds := f.requests()
	lists := strings.Count(strings.Join(kinds, " "), "list")
	if lists < 2 {
		t.Fatalf("%d lists in 1s with watches silent for good (requests %v at %v), want the silent watch ended after %v and a new list", lists, kinds, times, tm.watchIdle)
	}
}

// A watch that gets a bookmark more often than watchIdle is never ended for
// silence: each event starts the idle time again.
func TestSliceResolverKeepsABusyWatch(t *testing.T) {
	tm := testTiming
	tm.watchIdle = 300 * time.Millisecond
	f := &faultyAPI{answer: listOK(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for {
			fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"EndpointSlice","metadata":{"resourceVersion":"11"}}}`)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})}
	startFaulty(t, f, tm)
	time.Sleep(time.Second)
	times, kinds := f.requests()
	if lists := strings.Count(strings.Join(kinds, " "), "list"); lists != 1 {
		t.Errorf("%d lists in 1s with a bookmark every 100ms on the watch (requests %v at %v), want 1: a watch silent less than %v is kept", lists, kinds, times, tm.watchIdle)
	}
}

// Each watch asks the API to end it between watchTimeoutMin and twice that
// (5 to 10 minutes), and asks for bookmarks.
func TestSliceResolverWatchTimeout(t *testing.T) {
	f := &faultyAPI{answer: silentWatch}
	startFaulty(t, f, defaultTiming)
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		var q string
		for i, k := range f.kinds {
			if k == "watch" {
				q = f.query[i]
			}
		}
		f.mu.Unlock()
		if q != "" {
			v := mustQuery(t, q)
			secs, err := strconv.Atoi(v.Get("timeoutSeconds"))
			if err != nil || secs < 300 || secs > 600 || v.Get("allowWatchBookmarks") != "true" {
				t.Fatalf("watch query %s: want timeoutSeconds in [300, 600] and bookmarks", q)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no watch in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ResolveNow, grpc-go's hint after a failed connection, lists again, at
// most once per resolveNowEvery however often it comes.
func TestSliceResolverResolveNow(t *testing.T) {
	tm := testTiming
	tm.resolveNowEvery = 300 * time.Millisecond
	f := &faultyAPI{answer: silentWatch}
	_, r, cc := startFaulty(t, f, tm)
	cc.next(t) // the first list
	began := time.Now()
	for time.Since(began) < time.Second {
		r.ResolveNow(resolver.ResolveNowOptions{})
		time.Sleep(5 * time.Millisecond)
	}
	_, kinds := f.requests()
	lists := strings.Count(strings.Join(kinds, " "), "list")
	// The first list, then one per 300ms of the second of hints: 4 or 5.
	if lists < 3 || lists > 5 {
		t.Errorf("%d lists with ResolveNow called every 5ms for 1s, want the first and one per %v (3 to 5)", lists, tm.resolveNowEvery)
	}
}

// Resolved is closed once the first list has answered, or failed.
func TestSliceResolverResolved(t *testing.T) {
	for name, answer := range map[string]func(http.ResponseWriter, *http.Request){
		"answered": listOK(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }),
		"refused":  status(http.StatusForbidden),
	} {
		t.Run(name, func(t *testing.T) {
			b, _, _ := startFaulty(t, &faultyAPI{answer: answer}, testTiming)
			select {
			case <-b.Resolved():
			case <-time.After(5 * time.Second):
				t.Fatal("Resolved not closed 5s after the first list")
			}
		})
	}
}

func mustQuery(t *testing.T, q string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
