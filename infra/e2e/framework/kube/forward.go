package kube

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// forward is a port-forward to one port of a pod, through the API server,
// that outlives the restarts of the pod's processes: client-go, like kubectl,
// drops the whole forward when one connection finds the pod's port closed, so
// the forward starts again on the same local port.
type forward struct {
	addr string // the local host:port

	mu   sync.Mutex
	stop chan struct{} // of the current forwarder
	done bool
}

// PortForward forwards a free loopback port to port of pod ns/pod until
// the test ends, and returns the local address.
func (c *Cluster) PortForward(t testing.TB, ns, pod string, port int) string {
	t.Helper()
	f := &forward{}
	died, err := f.start(c, ns, pod, fmt.Sprintf("0:%d", port))
	if err != nil {
		t.Fatalf("port-forward to pod %s: %v", pod, err)
	}
	_, local, _ := net.SplitHostPort(f.addr)
	spec := local + ":" + strconv.Itoa(port)
	go func() {
		for {
			<-died
			for {
				f.mu.Lock()
				stopped := f.done
				f.mu.Unlock()
				if stopped {
					return
				}
				if died, err = f.start(c, ns, pod, spec); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(f.close)
	return f.addr
}

// start runs one forwarder for spec (LOCAL:REMOTE) and records the local
// address; the channel it returns is closed when that forwarder ends.
func (f *forward) start(c *Cluster, ns, pod, spec string) (<-chan struct{}, error) {
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, err
	}
	url := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stop, ready, died := make(chan struct{}), make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{spec}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	failed := make(chan error, 1)
	go func() {
		failed <- pf.ForwardPorts()
		close(died)
	}()
	select {
	case <-ready:
	case err := <-failed:
		return nil, err
	case <-time.After(30 * time.Second):
		close(stop)
		return nil, fmt.Errorf("not ready within 30s")
	}
	fwd, err := pf.GetPorts()
	if err != nil {
		close(stop)
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		close(stop)
		return died, nil
	}
	f.stop = stop
	for _, p := range fwd {
		f.addr = fmt.Sprintf("127.0.0.1:%d", p.Local)
	}
	return died, nil
}

func (f *forward) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.done = true
		close(f.stop)
	}
}
